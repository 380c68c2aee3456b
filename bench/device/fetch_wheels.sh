#!/usr/bin/env bash
# Prepare .whl/ (ignored by git) for a GPU run of negdb with the device tool; run here, in a checkout, once.
#
#   bash bench/device/fetch_wheels.sh            # the carry for the GPU machine (Python 3.12, manylinux x86-64)
#   bash bench/device/fetch_wheels.sh --rehearse # also .whl/rehearse/: the pure-Python ones for this Python
#
# The GPU machine has python3 3.12 with torch 2.11, transformers 5.17, numpy, scipy, pyarrow, click, tqdm,
# matplotlib, psutil, pytest (see /work/.library/device/KINDS.md), but no registry. What negdb needs beyond that
# (the versions installed in .venv here) is downloaded as wheels for that Python, installed with
# `pip install --no-deps --target .whl/site`, and packed with the SmolLM2 GGUF by bench/device/carry.py into
# .whl/parts/part-K.bin (each small enough to travel in one call beside the working tree) and .whl/MANIFEST.json.
# At the end it prints the device-tool calls that carry the parts and run bench/device/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
LIMIT_MIB=64
# missing on the GPU machine (see bench/device/README.md for how the list was made); versions from .venv
PKGS="duckdb polars polars-runtime-32 zarr numcodecs donfig google-crc32c gguf dill"
BENCH="lm-eval==0.4.13"  # the bench extra (bench/bench_blimp.py); its other needs are on the machine

pins=$("$PY" - $PKGS <<'EOF'
import importlib.metadata as md, sys
print(" ".join(f"{p}=={md.version(p)}" for p in sys.argv[1:]))
EOF
)
echo "wheels: $pins $BENCH"
rm -rf .whl/site .whl/wheels
mkdir -p .whl/wheels
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d .whl/wheels $pins $BENCH
"$PY" -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" --target .whl/site .whl/wheels/*.whl
rm -rf .whl/site/bin

if [ "$REHEARSE" = 1 ]; then  # the same versions for this Python where they are pure Python (or abi3)
  rm -rf .whl/rehearse
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl/rehearse zarr==$("$PY" -c \
    "import zarr; print(zarr.__version__)") $(echo $pins | tr ' ' '\n' | grep -E '^(donfig|gguf|dill|polars)==') $BENCH
fi

GGUF=$("$PY" -c "from negdb.models.registry import smollm2_gguf_path as p; print(p())")
echo "SmolLM2 GGUF: $GGUF ($(du -m "$GGUF" | cut -f1) MiB)"
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2> /dev/null | tail -1 | cut -f1)
TREE_MIB=$(( TREE / 1048576 + 1 ))
PART=$(( LIMIT_MIB - TREE_MIB - 3 ))
echo "working tree: $TREE_MIB MiB; parts of up to $PART MiB (the limit per call is $LIMIT_MIB MiB)"
"$PY" bench/device/carry.py pack --site .whl/site --gguf "$GGUF" --out .whl --part-mb "$PART"
N=$(ls .whl/parts | wc -l)
echo
echo "Carry: $(du -sm .whl/parts | cut -f1) MiB in $N parts. Device-tool calls, back to back (the machine stays"
echo "warm only about 30 s after a call; parts sent earlier stay there while it is held):"
for i in $(seq 1 "$N"); do
  if [ "$i" -lt "$N" ]; then cmd="bash bench/device/run.sh --stage"; else cmd="bash bench/device/run.sh"; fi
  echo "  run(command=\"$cmd\", carry=[\".whl/MANIFEST.json\", \".whl/parts/part-$i.bin\"], timeout_s=$([ "$i" -lt "$N" ] && echo 120 || echo 540))"
done

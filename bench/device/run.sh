#!/usr/bin/env bash
# The GPU run of negdb, as one call of the device tool (bench/device/README.md):
#   install the carried wheels and the SmolLM2 GGUF, run the GPU tests, the GPU benchmarks (ingest against the
#   bare forward pass, statistics on the GPU against numpy on the CPU and the authors' approach, BLiMP scoring
#   against lm-evaluation-harness), then the full-size evidence on SmolLM2-135M (full BLiMP, TSE, WikiText-2
#   test and suite; baseline, top-1% W-ablation (neg), random controls with 3 seeds, perplexity-matched),
#   bringing back the results bundle under $OUT, rewritten after every stage.
#
#   bash bench/device/run.sh                     # there: every carried part must have arrived
#   bash bench/device/run.sh --stage             # there: only report which carried parts have arrived
#   bash bench/device/run.sh --rehearse          # here, on the CPU: tiny model, tiny sizes, the same stages
#
# Options: --budget SECONDS (the whole run, default 420; each stage is time-boxed inside it and the evidence
# gets what is left), --evidence-dtype auto|float32|bfloat16 (auto: float32 when the projected time of the whole
# evidence fits what is left, from the bare forward pass measured by bench-ingest, else bfloat16; the dtype is
# part of every result's key), --skip tests,bench,evidence, --out DIR (default $OUT), --keep (keep the work folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

REHEARSE=0; STAGE_ONLY=0; BUDGET=420; SKIP=""; KEEP=0; OUTDIR=${OUT:-}; EDTYPE=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --stage) STAGE_ONLY=1 ;;
    --budget) BUDGET=$2; shift ;;
    --skip) SKIP=$2; shift ;;
    --evidence-dtype) EDTYPE=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --keep) KEEP=1 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$STAGE_ONLY" = 1 ]; then
  exec python3 bench/device/carry.py status --carry .whl
fi
[ -n "$OUTDIR" ] || { echo "run.sh: set \$OUT or pass --out DIR" >&2; exit 2; }
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
START=$(date +%s)
LOG="$OUTDIR/run.log"
FIG="$OUTDIR/figures.json"
WORK=${NEGDB_DEVICE_WORK:-$(mktemp -d /tmp/negdb-device.XXXXXX)}
STORE="$WORK/store"
FIGS="$WORK/figures"
mkdir -p "$FIGS"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
skipped() { case ",$SKIP," in *",$1,"*) return 0 ;; esac; return 1; }
note() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }

# one stage: stage NAME CAP_SECONDS COMMAND... (time-boxed to min(CAP, what is left - RESERVE); status recorded)
RESERVE=25
stage() {
  local name=$1 cap=$2; shift 2
  local t; t=$(left); t=$(( t - RESERVE )); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 5 ]; then
    note "stage $name: skipped (no time left)"
    echo "{\"stage\": \"$name\", \"status\": \"no time\", \"seconds\": 0}" >> "$FIGS/stages.jsonl"
    return 0
  fi
  note "stage $name: up to ${t}s: $*"
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$t" "$@"
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  local status=ok; [ $rc -ne 0 ] && status="exit $rc"; [ $rc -eq 124 ] && status="timed out"
  note "stage $name: $status after ${took}s"
  echo "{\"stage\": \"$name\", \"status\": \"$status\", \"seconds\": $took, \"cap\": $t}" >> "$FIGS/stages.jsonl"
  bundle
  return 0
}

bundle() {  # the figures JSON and the store's segments into $OUTDIR (replacing the previous bundle)
  "$PY" - "$FIGS" "$FIG" <<'EOF'
import json, pathlib, sys
figs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
data = {}
for f in sorted(figs.glob("*.json")):
    try:
        data[f.stem] = json.loads(f.read_text())
    except ValueError:
        data[f.stem] = {"unreadable": f.read_text()[-2000:]}
st = figs / "stages.jsonl"
if st.exists():
    data["stages"] = [json.loads(l) for l in st.read_text().splitlines() if l.strip()]
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(data, indent=1))
tmp.replace(out)
EOF
  [ -d "$STORE" ] && "$PY" bench/device/carry.py bundle --store "$STORE" --out "$OUTDIR" "$FIGS"/*.txt 2>&1 | tail -1
}

note "negdb device run: rehearse=$REHEARSE budget=${BUDGET}s out=$OUTDIR work=$WORK"
# ------------------------------------------------------------------------------ install
if [ "$REHEARSE" = 1 ]; then
  PY=${PY:-.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  SITE="$WORK/site"
  DEVICE=cpu
  export NEGDB_GPU_TEST_DEVICE=cpu
  # the carried wheels that install on this Python (pure Python; compiled ones are for 3.12 there), if fetched
  if compgen -G ".whl/rehearse/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/rehearse/*.whl
  fi
else
  PY=python3
  SITE=/tmp/negdb-site
  DEVICE=cuda
  if [ ! -f "$SITE/.installed" ] || ! cmp -s .whl/MANIFEST.json "$SITE/.installed"; then
    rm -rf "$SITE"
    "$PY" bench/device/carry.py install --carry .whl --site "$SITE" || exit 3
    cp .whl/MANIFEST.json "$SITE/.installed"
  fi
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$WORK/negdb" . \
  > "$WORK/pip-negdb.log" 2>&1 || { cat "$WORK/pip-negdb.log"; note "negdb did not install"; exit 3; }
export PYTHONPATH="$WORK/negdb:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export NEGDB_CACHE="$WORK/cache"
NEGDB=("$PY" -m negdb.cli --store "$STORE")
"$PY" - <<'EOF' | tee "$FIGS/environment.txt"
import importlib, platform, sys
import torch
print(f"python {platform.python_version()} {sys.executable}; torch {torch.__version__}, cuda "
      f"{torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
for m in ("transformers", "numpy", "scipy", "pyarrow", "duckdb", "polars", "zarr", "numcodecs", "lm_eval", "negdb"):
    try:
        mod = importlib.import_module(m)
        print(f"{m} {getattr(mod, '__version__', '?')} {getattr(mod, '__file__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"{m} MISSING ({type(err).__name__}: {err})")
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$FIGS/environment.txt"
command -v lscpu > /dev/null && lscpu | grep -E "Model name|^CPU\(s\)" >> "$FIGS/environment.txt"

# ------------------------------------------------------------------------------ sizes
if [ "$REHEARSE" = 1 ]; then
  MODEL="$WORK/tiny-model"
  "$PY" - "$MODEL" <<'EOF' > /dev/null 2>&1 || { note "could not build the tiny model"; exit 3; }
import sys
sys.path.insert(0, ".")
from tests.tiny_models import tiny_model, tiny_tokenizer
tiny_model("llama", seed=3, max_position_embeddings=4096).save_pretrained(sys.argv[1])  # the suite's long items
tiny_tokenizer().save_pretrained(sys.argv[1])
EOF
  INGEST=(--tokens 1024 --seq-len 64 --md-pairs 200)
  EVID=(--limit 1 --ppl-tokens 256 --probe-tokens 128 --window 64 --batch-tokens 512)
  TESTS=(-m "gpu and not slow")
  B_STATS=(--tokens 2048 --neurons 64 --block 32 --baseline-neurons 8 --rounds 1 --threads 1)
  B_INGEST=(--model "$MODEL" --tokens 1024 --seq-len 64 --md-pairs 200 --modes overlap)
  B_BLIMP=(--model "$MODEL" --limit 1 --rounds 1 --lm-eval-batch-sizes 4,16 --float64-sample 8 --batch-tokens 512)
  CAP_TESTS=600; CAP_BENCH=300; CAP_EVID=300
else
  MODEL=smollm2-135m
  INGEST=(--tokens 16384 --seq-len 512)
  EVID=(--batch-tokens 32768)
  TESTS=(-m gpu)
  B_STATS=(--device cuda --tokens 16384 --neurons 6144 --block 1536 --baseline-neurons 100 --rounds 2 --threads 16)
  B_INGEST=(--device cuda --tokens 16384 --batch-tokens 8192 --mem-budget 8192 --activations none --modes overlap)
  B_BLIMP=(--device cuda --limit 20 --rounds 2 --lm-eval-batch-sizes 32,128,512 --float64-sample 100 --batch-tokens 32768)
  CAP_TESTS=150; CAP_BENCH=100; CAP_EVID=900
fi

# ------------------------------------------------------------------------------ the model, converted once
stage model "$CAP_BENCH" "$PY" -c "import sys; from negdb.models import registry, checkpoints, loading
src = registry.resolve(sys.argv[1]); lm = loading.load(src, checkpoints.select(src, 'final')[0], device='$DEVICE')
print(src.model_id, lm.n_layers, 'layers x', lm.d_mlp, 'neurons on', lm.device)" "$MODEL"

# ------------------------------------------------------------------------------ GPU tests
if ! skipped tests; then
  stage gpu-tests "$CAP_TESTS" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py "${TESTS[@]}" \
    --junitxml="$FIGS/gpu-tests.xml"
  "$PY" - "$FIGS/gpu-tests.xml" "$FIGS/gpu_tests.json" <<'EOF' || true
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
cases = [{"name": c.get("name"), "seconds": float(c.get("time", 0)),
          "result": ("failed" if c.find("failure") is not None or c.find("error") is not None
                     else "skipped" if c.find("skipped") is not None else "passed")} for c in suite.iter("testcase")]
json.dump({k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} | {"cases": cases},
          open(sys.argv[2], "w"), indent=1)
EOF
fi

# ------------------------------------------------------------------------------ benchmarks
if ! skipped bench; then
  stage bench-stats "$CAP_BENCH" "$PY" bench/bench_stats.py "${B_STATS[@]}" --json "$FIGS/bench_stats.json"
  stage bench-ingest "$CAP_BENCH" "$PY" bench/bench_ingest.py "${B_INGEST[@]}" --json "$FIGS/bench_ingest.json"
  if "$PY" -c "import lm_eval" 2> /dev/null; then
    stage bench-blimp "$CAP_BENCH" "$PY" bench/bench_blimp.py "${B_BLIMP[@]}" --json "$FIGS/bench_blimp.json"
  else
    note "stage bench-blimp: skipped (lm-eval is not installed here)"
  fi
fi

# ------------------------------------------------------------------------------ full-size evidence
# tokens the evidence scores per condition with SmolLM2's tokenizer (requests incl. their prefix token; the suite
# counted without negdb's shared-prefix packing): BLiMP 1.42M, TSE 3.04M, suite 2.28M, WikiText-2 test 0.30M
EVIDENCE_TOKENS=${EVIDENCE_TOKENS:-7040000}
CONDITIONS=6  # baseline, ablation, 3 random sets, ppl-matched (its probes read 16k tokens each)
if [ "$EDTYPE" = auto ]; then
  EDTYPE=$("$PY" - "$FIGS/bench_ingest.json" "$(left)" "$EVIDENCE_TOKENS" "$CONDITIONS" "$REHEARSE" <<'EOF'
import json, sys
path, left, tokens, conditions, rehearse = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
try:
    tok_s = json.load(open(path))["bare_forward_tok_s"]
except (OSError, ValueError, KeyError):
    tok_s = None
# scoring costs about a forward pass per token plus the log-softmax over the vocabulary: 0.6 of the bare rate
need = None if tok_s is None else tokens * conditions / (0.6 * tok_s)
fits = rehearse == "1" or (need is not None and need < 0.8 * left)
json.dump({"bare_forward_tok_s": tok_s, "projected_float32_s": need, "seconds_left": left,
           "chosen": "float32" if fits else "bfloat16"}, open(path.replace("bench_ingest", "evidence_dtype"), "w"))
print("float32" if fits else "bfloat16")
EOF
)
fi
note "evidence dtype: $EDTYPE"

if ! skipped evidence; then
  stage ingest "$CAP_EVID" "${NEGDB[@]}" ingest --model "$MODEL" "${INGEST[@]}" --device "$DEVICE" --activations none --quiet
  A=(ablate --model "$MODEL" --top 1% --mode neg --device "$DEVICE" --dtype "$EDTYPE" --quiet "${EVID[@]}")
  # cheapest and most telling first; each stored evaluation is reused by the later commands
  stage grammar "$CAP_EVID" "${NEGDB[@]}" "${A[@]}" --evals blimp,tse,ppl --controls none
  stage random "$CAP_EVID" "${NEGDB[@]}" "${A[@]}" --evals blimp,tse,ppl --controls random --seeds 3
  stage ppl-matched "$CAP_EVID" "${NEGDB[@]}" "${A[@]}" --evals blimp,tse,ppl --controls ppl-matched
  stage suite "$CAP_EVID" "${NEGDB[@]}" "${A[@]}" --evals suite --controls random,ppl-matched --seeds 3
  RESERVE=5 stage table 120 "${NEGDB[@]}" "${A[@]}" --evals ppl,blimp,tse,suite --controls random,ppl-matched \
    --seeds 3 --format json --out "$FIGS/evidence.json"
  "${NEGDB[@]}" results > "$FIGS/results.txt" 2>&1 || true
fi
bundle
note "done in $(( $(date +%s) - START ))s; bundle: $(ls "$OUTDIR" | tr '\n' ' ')"
[ "$KEEP" = 1 ] || [ -n "${NEGDB_DEVICE_WORK:-}" ] || rm -rf "$WORK"

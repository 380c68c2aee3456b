"""Peak memory of ingest against the token budget: each budget runs in a fresh process.

    .venv/bin/python bench/bench_memory.py --model smollm2-135m --tokens 8192,32768,131072

Prints the peak resident set size (ru_maxrss) of each ingest process; a flat line means peak memory does not
grow with the token budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import resource, sys, time
from negdb.ingest import ingest
t = time.perf_counter()
ingest(model=sys.argv[1], tokens=int(sys.argv[2]), store=sys.argv[3], progress=False,
             activations="none", layers=sys.argv[4])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", default="8192,32768,131072")
    ap.add_argument("--layers", default="all")
    args = ap.parse_args()
    rows = []
    for n in (int(t) for t in args.tokens.split(",")):
        with tempfile.TemporaryDirectory(prefix="negdb-mem-") as store:
            out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(n), store, args.layers],
                                 capture_output=True, text=True, check=True).stdout.split()
        rows.append({"tokens": n, "peak_rss_mb": round(int(out[0]) / 1024, 1), "seconds": round(float(out[1]), 1)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()

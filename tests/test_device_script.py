"""bench/device: the carry (pack, parts, install), the results bundle and its merge, and the whole GPU script
rehearsed on the CPU (tiny model, tiny sizes, the same stages and commands) so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("carry", ROOT / "bench" / "device" / "carry.py")
carry = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(carry)  # type: ignore[union-attr]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (site / "pkg" / "blob.bin").write_bytes(os.urandom(300_000))  # incompressible: several parts
    (site / "pkg-1.0.dist-info").mkdir()
    (site / "pkg-1.0.dist-info" / "METADATA").write_text("Name: pkg\n")
    return site


def test_pack_parts_install_round_trip(tmp_path: Path) -> None:
    site = _site(tmp_path)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(1000))
    out = tmp_path / "whl"
    man = carry.pack(site, gguf, out, part_mb=0.1, preset="1")
    assert len(man["parts"]) >= 3 and all(p["bytes"] <= 0.1 * 2**20 for p in man["parts"])
    assert carry.status(out) == ([p["name"] for p in man["parts"]], [])
    # a part that has not arrived (or arrived damaged) is named, and install refuses
    (out / "parts" / "part-2.bin").write_bytes(b"truncated")
    assert carry.status(out)[1] == ["part-2.bin"]
    with pytest.raises(SystemExit, match="part-2.bin"):
        carry.install(out, tmp_path / "dst")
    carry.pack(site, gguf, out, part_mb=0.1, preset="1")
    dst = tmp_path / "dst"
    carry.install(out, dst)
    assert (dst / "pkg" / "blob.bin").read_bytes() == (site / "pkg" / "blob.bin").read_bytes()
    assert (dst / carry.GGUF_PACKAGE / "model.gguf").read_bytes() == gguf.read_bytes()
    code = f"import sys; sys.path.insert(0, {str(dst)!r}); import pkg, importlib.util as u; " \
           f"print(pkg.VALUE, u.find_spec({carry.GGUF_PACKAGE!r}) is not None)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["42", "True"]


def _store(root: Path) -> Path:
    (root / "tables" / "eval_results").mkdir(parents=True)
    (root / "negdb.json").write_text('{"format": 1}')
    (root / "tables" / "eval_results" / "a.parquet").write_bytes(b"A" * 1000)
    (root / "tables" / "eval_items" / "x=1").mkdir(parents=True)
    (root / "tables" / "eval_items" / "x=1" / "b.parquet").write_bytes(os.urandom(2000))
    (root / "acts").mkdir()
    (root / "acts" / "big.zarr").write_bytes(b"not bundled")
    (root / "work").mkdir()
    return root


def test_bundle_and_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "store")
    note = tmp_path / "env.txt"
    note.write_text("gpu: H100")
    out = tmp_path / "out"
    monkeypatch.setattr(carry, "BUNDLE_PART_BYTES", 4096)
    files = carry.bundle(store, out, [note])
    assert len(files) >= 2 and all(f.stat().st_size <= 4096 for f in files)
    assert not list(out.glob(".*"))  # no temporary files left
    target = _store(tmp_path / "target")
    (target / "tables" / "eval_results" / "a.parquet").write_bytes(b"B" * 1000)  # same name, other bytes
    (target / "tables" / "eval_items" / "x=1" / "b.parquet").unlink()
    got = carry.merge(out, target)
    assert got["added"] == 1 and got["kept_differing"] == ["tables/eval_results/a.parquet"]
    assert (target / "tables" / "eval_items" / "x=1" / "b.parquet").read_bytes() == \
        (store / "tables" / "eval_items" / "x=1" / "b.parquet").read_bytes()
    assert (target / "tables" / "eval_results" / "a.parquet").read_bytes() == b"B" * 1000  # first writer wins
    assert Path(got["extra"][0]).read_text() == "gpu: H100"
    fresh = carry.merge(out, tmp_path / "fresh")
    assert fresh["added"] == 2 and json.loads((tmp_path / "fresh" / "negdb.json").read_text()) == {"format": 1}
    # a smaller bundle replaces the parts of a larger one
    monkeypatch.setattr(carry, "BUNDLE_PART_BYTES", 10**6)
    assert [f.name for f in carry.bundle(store, out, [])] == ["bundle-0.tar"]
    assert sorted(p.name for p in out.glob("bundle-*")) == ["bundle-0.tar"]
    with tarfile.open(out / "bundle-0.tar") as tar:
        assert sorted(tar.getnames()) == ["store/negdb.json", "store/tables/eval_items/x=1/b.parquet",
                                          "store/tables/eval_results/a.parquet"]


def test_too_big_a_bundle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path / "store")
    monkeypatch.setattr(carry, "BUNDLE_PART_BYTES", 1024)
    with pytest.raises(SystemExit, match="more than"):
        carry.bundle(store, tmp_path / "out", [])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_device_script_rehearsed_on_the_cpu(tmp_path: Path) -> None:
    """``bench/device/run.sh --rehearse``: every stage ok, a bundle within the device tool's limits, which merges
    into a store that answers the same ablation without computing anything and draws the report."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "NEGDB_DEVICE_WORK": str(work), "PY": sys.executable, "HF_HUB_OFFLINE": "1"}
    env.pop("NEGDB_GPU_TEST_DEVICE", None)
    res = subprocess.run(["bash", "bench/device/run.sh", "--rehearse", "--out", str(out), "--budget", "3300"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=3500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    stages = {s["stage"]: s["status"] for s in figures["stages"]}
    assert set(stages) >= {"gpu-tests", "bench-stats", "bench-ingest", "ingest", "grammar", "random",
                           "ppl-matched", "suite", "table"}
    assert all(v == "ok" for v in stages.values()), stages
    tests = figures["gpu_tests"]
    assert int(tests["tests"]) >= 8 and tests["failures"] == "0" and tests["errors"] == "0", tests
    assert tests["skipped"] == "0"  # the CPU stood in for the GPU: nothing skipped
    assert figures["bench_stats"]["per_neuron"] and figures["bench_ingest"]["overlap"]
    conditions = {c["name"] for c in figures["evidence"]["conditions"]}
    assert conditions >= {"baseline", "ablation", "random", "ppl-matched"}
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and "run.log" in files and all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    # the bundle merges into a store that holds every evaluation of the table
    merged = tmp_path / "merged"
    got = subprocess.run([sys.executable, "bench/device/carry.py", "merge", str(out), "--store", str(merged)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(got.stdout)["added"] > 10
    model = str(work / "tiny-model")
    again = subprocess.run(
        [sys.executable, "-m", "negdb.cli", "--store", str(merged), "ablate", "--model", model, "--top", "1%",
         "--mode", "neg", "--device", "cpu", "--quiet", "--limit", "1", "--ppl-tokens", "256", "--probe-tokens",
         "128", "--window", "64", "--evals", "ppl,blimp,tse,suite", "--controls", "random,ppl-matched", "--seeds",
         "3", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "loading " not in again.stderr  # every evaluation read back: the model is never loaded
    assert json.loads(again.stdout)["conditions"] == figures["evidence"]["conditions"]
    report = subprocess.run([sys.executable, "-m", "negdb.cli", "--store", str(merged), "report", "--out",
                             str(tmp_path / "report")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "report" / "index.html").is_file()

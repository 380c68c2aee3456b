"""Fan-out on Dask: a 2-worker LocalCluster (processes, loopback only) against the serial path.

A fanned-out ingest is bit-identical to a serial one, a fanned-out sweep equals a serial sweep, duplicate
submissions leave one segment, and a worker killed mid-task loses nothing and doubles nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

import negdb
from negdb.cluster import drivers, jobs
from negdb.cluster.executor import Executor, slurm_cluster
from negdb.errors import BadArgument
from negdb.ingest import ingest
from negdb.ingest.plan import IngestSpec, Resources
from tests.ingest_helpers import assert_one_error, cli, stats_frame, store_files, work_state
from tests.tiny_models import save_step_run, save_tiny

pytestmark = pytest.mark.timeout(600)

SMALL = dict(tokens=512, seq_len=32, md_pairs=100)
SLOW = dict(tokens=2048, seq_len=32, md_pairs=500)
SLOW_RES = Resources(batch_tokens=64)
QUIET = dict(progress=False, log=lambda _m: None)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        yield lc, client


@pytest.fixture(scope="module")
def spec(cluster) -> Executor:
    return Executor(kind="dask", address=cluster[0].scheduler_address)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_step_run(tmp_path_factory.mktemp("run"), steps=(0, 1000, 2000))


def _array_digest(store: Path) -> dict[str, str]:
    return {f: hashlib.sha256((store / f).read_bytes()).hexdigest() for f in store_files(store)
            if f.startswith("acts/")}


def test_fanned_out_ingest_is_bit_identical_to_serial(tmp_path: Path, spec: Executor, run_dir: Path) -> None:
    serial, fanned = tmp_path / "serial", tmp_path / "fanned"
    ingest(model=str(run_dir), checkpoints="all", store=serial, **SMALL, **QUIET)
    logs: list[str] = []
    db = negdb.open(fanned, log=logs.append)
    res = db.ingest(str(run_dir), checkpoints="all", executor=spec, **SMALL)  # the typed API, fanned out
    assert [r.revision for r in res] == ["step0", "step1000", "step2000"]
    assert [r.status for r in res] == ["ingested"] * 3
    assert stats_frame(fanned).equals(stats_frame(serial))
    assert _array_digest(fanned) == _array_digest(serial) != {}
    assert any(line.startswith("3 task(s) on ") for line in logs)  # the per-worker summary
    assert any(line.startswith("catalog refreshed: 3 checkpoint(s)") for line in logs)
    again = drivers.run(IngestSpec(str(run_dir), checkpoints="all", **SMALL), fanned, spec, **QUIET)
    assert [r.status for r in again] == ["already"] * 3  # nothing submitted


def test_duplicate_submissions_leave_one_segment(tmp_path: Path, cluster, run_dir: Path) -> None:
    _, client = cluster
    store = tmp_path / "store"
    negdb_store = str(store)
    one = IngestSpec(str(run_dir), checkpoints=["step1000"], activations="all", **SMALL)
    futures = [client.submit(jobs.ingest_job, f"dup-{i}", one, negdb_store, Resources(), key=f"dup-{i}", pure=False)
               for i in range(2)]
    statuses = sorted(f.result().status for f in futures)
    assert statuses == ["already", "ingested"]
    for table in ("neuron_stats", "activations", "checkpoints"):
        assert len(list((store / "tables" / table).rglob("*.parquet"))) == 1, table
    with negdb.connect(negdb_store) as cat:
        assert cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0] == 192


def test_a_worker_killed_mid_task_loses_nothing_and_doubles_nothing(tmp_path: Path, cluster, spec: Executor,
                                                                    run_dir: Path) -> None:
    import threading

    _, client = cluster
    serial, fanned = tmp_path / "serial", tmp_path / "fanned"
    ingest(model=str(run_dir), checkpoints="step0,step1000", store=serial, resources=SLOW_RES, **SLOW, **QUIET)
    pids = client.run(os.getpid)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            state = work_state(fanned)
            if state is not None and state["batches_done"] >= 3:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    res = drivers.run(IngestSpec(str(run_dir), checkpoints="step0,step1000", **SLOW), fanned, spec,
                      resources=SLOW_RES, **QUIET)
    thread.join()
    assert killed, "no worker was killed"
    assert sorted(r.status for r in res) in (["ingested", "resumed"], ["ingested", "ingested"])
    assert stats_frame(fanned).equals(stats_frame(serial))
    assert _array_digest(fanned) == _array_digest(serial)
    assert [f for f in store_files(fanned) if f.startswith("work/") or f.endswith(".partial")] == []
    per_revision = sorted(p.parent.name for p in (fanned / "tables" / "neuron_stats").rglob("*.parquet"))
    assert per_revision == ["revision=step0", "revision=step1000"]  # one segment per job, none doubled
    assert len(list((fanned / "tables" / "activations").glob("*.parquet"))) == 1  # the final checkpoint's
    again = drivers.run(IngestSpec(str(run_dir), checkpoints="step0,step1000", **SLOW), fanned, spec, **QUIET)
    assert [r.status for r in again] == ["already", "already"]
    client.wait_for_workers(2, timeout=60)


SWEEP = dict(fractions=[0.1], by=["w_dist"], modes=["neg", "pos"], seeds=[0], controls=["random"],
             evals=["tse", "copa"], limit=2, n_boot=100)


@pytest.fixture(scope="module")
def sweep_stores(tmp_path_factory) -> tuple[Path, Path, Path]:
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    stores = []
    for name in ("serial", "fanned"):
        store = tmp_path_factory.mktemp(name)
        ingest(model=str(model), store=store, **SMALL, **QUIET)
        stores.append(store)
    return model, stores[0], stores[1]


def test_fanned_out_sweep_equals_serial_sweep(sweep_stores, spec: Executor) -> None:
    from negdb.evals.options import Scoring

    model, serial_store, fanned_store = sweep_stores
    scoring = Scoring(window=64)
    serial = negdb.open(serial_store).sweep(str(model), scoring=scoring, **SWEEP)
    fanned = negdb.open(fanned_store).sweep(str(model), scoring=scoring, executor=spec, **SWEEP)
    assert fanned.analysis_id == serial.analysis_id
    assert fanned.computed == 0 and fanned.reused > 0  # every evaluation was made by the workers
    assert fanned.render("csv") == serial.render("csv")
    assert fanned.render("table") == serial.render("table")


def test_fanned_out_ablation_equals_serial(sweep_stores, spec: Executor) -> None:
    """One task per benchmark, then the serial experiment reads every evaluation back and records it once."""
    model, serial_store, fanned_store = sweep_stores
    args = dict(mode="neg", evals=["tse", "copa"], controls=["random"], seeds=1, limit=2)
    serial = negdb.open(serial_store).ablate(negdb.SetSpec(str(model), top=0.05), **args)
    fanned = negdb.open(fanned_store).ablate(negdb.SetSpec(str(model), top=0.05), executor=spec, **args)
    assert fanned.ablation_id == serial.ablation_id
    assert fanned.computed == 0 and fanned.reused > 0
    assert fanned.comparison.render("csv") == serial.comparison.render("csv")
    with negdb.connect(str(fanned_store)) as cat:
        n = cat.sql("SELECT count(DISTINCT ablation_id) AS n FROM ablations WHERE ablation_id = ?",
                    [fanned.ablation_id])["n"][0]
    assert n == 1


def test_slurm_job_script(tmp_path: Path) -> None:
    spec = Executor(kind="slurm", partition="gpu", account="lab42", walltime="02:30:00", memory="64GB",
                    cores=8, gpus_per_job=2, job_prologue=("module load cuda",))
    cluster = slurm_cluster(spec, host="127.0.0.1")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in ("#SBATCH -p gpu", "#SBATCH -A lab42", "#SBATCH -t 02:30:00", "#SBATCH --gres=gpu:2",
                      "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH -J negdb"):
        assert directive in lines, (directive, script)
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    assert "module load cuda" in lines
    worker = lines[-1]
    assert "distributed.cli.dask_worker" in worker and "--resources GPU=2" in worker and "--nthreads 8" in worker
    assert "tcp://127.0.0.1:" in worker  # the scheduler it reports to


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "local", "--address", "tcp://127.0.0.1:1"], "--executor dask"),
    (["--executor", "dask", "--partition", "gpu"], "--executor slurm"),
    (["--executor", "dask", "--workers", "0"], "--workers"),
])
def test_bad_executor_options_are_one_line(tmp_path: Path, run_dir: Path, args: list[str], message: str) -> None:
    res = cli(tmp_path / "s", "ingest", "--model", str(run_dir), *args, "--quiet")
    assert_one_error(res, BadArgument)
    assert message in res.stderr
    with pytest.raises(BadArgument):
        Executor(kind="ray")


def test_cli_ingest_on_the_cluster(tmp_path: Path, spec: Executor, run_dir: Path) -> None:
    res = cli(tmp_path / "s", "ingest", "--model", str(run_dir), "--checkpoints", "step0,step2000",
              "--executor", "dask", "--address", spec.address, "--tokens", "512", "--seq-len", "32",
              "--md-pairs", "100", "--quiet")
    assert res.exit_code == 0, res.output
    assert "2 checkpoint(s) ingested" in res.output
    with negdb.connect(str(tmp_path / "s")) as cat:
        assert cat.sql("SELECT DISTINCT revision FROM activations")["revision"].to_list() == ["step2000"]


def test_cli_analyze_training_on_the_cluster_equals_serial(tmp_path: Path, spec: Executor, run_dir: Path) -> None:
    args = ["analyze", "training", "--model", str(run_dir), "--checkpoints", "all", "--evals", "none", "--tokens",
            "512", "--seq-len", "32", "--md-pairs", "100", "--format", "json", "--quiet"]
    serial = cli(tmp_path / "serial", *args)
    fanned = cli(tmp_path / "fanned", *args, "--executor", "dask", "--address", spec.address)
    assert serial.exit_code == 0 and fanned.exit_code == 0, (serial.output, fanned.output)
    a, b = json.loads(serial.stdout), json.loads(fanned.stdout)
    assert a["analysis_id"] == b["analysis_id"] and a["rows"] == b["rows"]


def test_fanned_out_ablation_searches_the_ppl_matched_control_once(tmp_path: Path, spec: Executor) -> None:
    """With a ppl-matched control, a first task searches the match (computing its probes) and the benchmark
    tasks, which Dask starts only after it, compute no probe; the result equals the serial experiment's."""
    from negdb.ablate.options import Controls
    from negdb.evals.options import Scoring

    model = save_tiny(tmp_path / "neox", "gpt_neox", seed=0)
    stores = {name: tmp_path / name for name in ("serial", "fanned")}
    for store in stores.values():
        ingest(model=str(model), store=store, **SMALL, **QUIET)
    controls = Controls(kinds=["ppl-matched"], probe_tokens=128, resolution=0.1, max_fraction=0.4)
    args = dict(mode="neg", evals=["tse", "copa"], controls=controls, limit=2, scoring=Scoring(window=64))
    logs: list[str] = []
    serial = negdb.open(stores["serial"]).ablate(negdb.SetSpec(str(model), top=0.1), **args)
    fanned = negdb.open(stores["fanned"], log=logs.append).ablate(negdb.SetSpec(str(model), top=0.1),
                                                                  executor=spec, **args)
    assert serial.match is not None and serial.probes > 2  # baseline, ablation and at least one probe
    searched = [line for line in logs if line.startswith("ppl-matched control: searched once")]
    assert searched == [f"ppl-matched control: searched once ({serial.probes} probe perplexities computed) before "
                        "2 benchmark task(s), which computed 0 more"], logs
    assert fanned.probes == 0 and fanned.computed == 0
    assert fanned.ablation_id == serial.ablation_id
    assert fanned.match is not None and fanned.match.neuron_set.set_id == serial.match.neuron_set.set_id
    assert (fanned.match.fraction, fanned.match.ppl) == (serial.match.fraction, serial.match.ppl)
    assert fanned.comparison.render("csv") == serial.comparison.render("csv")

"""``--checkpoints all`` that a disk survives: the run's plan, the refusal, activations of the final checkpoint
only, hub hygiene (prefetch, clean-up) and weight hashes."""

from __future__ import annotations

import hashlib
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import negdb
from negdb.errors import NotEnoughDisk
from negdb.ingest import ingest
from negdb.ingest.pipeline import plan
from negdb.ingest.plan import Resources
from negdb.ingest.runplan import estimate_times
from negdb.models.registry import PYTHIA_REVISIONS, resolve
from negdb.models.sizes import PYTHIA_ARCH, ModelSize
from tests.ingest_helpers import cli
from tests.tiny_models import make_hub_cache, save_step_run

SMALL = dict(tokens=256, seq_len=32, md_pairs=50)
SMALL_ARGS = ["--tokens", "256", "--seq-len", "32", "--md-pairs", "50", "--quiet"]


def test_pythia_table_matches_the_architecture_formula_and_the_hub() -> None:
    for size, arch in PYTHIA_ARCH.items():
        assert arch.formula_params() == arch.n_params, size  # published totals = the GPT-NeoX formula
    assert round(PYTHIA_ARCH["70m"].weight_bytes / 1e6) == 166  # pytorch_model.bin of pythia-70m on the hub
    src = resolve("pythia-1b-deduped")
    assert src.size == ModelSize(1_011_781_632, 16, 2048, 8192, PYTHIA_ARCH["1b"].weight_bytes)


def test_dry_run_of_all_pythia_checkpoints_is_offline_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    p = plan(model="pythia-1b", checkpoints="all", store=store)
    assert [c.revision for c in p.checkpoints] == list(PYTHIA_REVISIONS) and len(p.checkpoints) == 154
    assert [c.revision for c in p.checkpoints if c.keep_layers] == ["step143000"]  # final activations only
    assert len(p.downloads) == 154 and p.download_bytes() == 154 * PYTHIA_ARCH["1b"].weight_bytes
    assert p.weights_peak() == 2 * PYTHIA_ARCH["1b"].weight_bytes  # one ingested, one prefetched
    tokens, d_mlp, layers, d_model = 16384, 8192, 16, 2048
    md_rows = tokens  # --md-pairs 50,000 is capped at tokens/2 pairs: every token's MLP input
    kept = tokens * d_mlp * layers * 2 + md_rows * d_model * layers * 2 + tokens * 12 + md_rows * 8
    assert p.array_bytes() == kept and p.stats_bytes() == 154 * layers * d_mlp * 160
    keep_all = plan(model="pythia-1b", checkpoints="all", activations="all", store=store,
                    resources=Resources(keep_weights=True))
    assert keep_all.array_bytes() == 154 * kept and keep_all.weights_peak() == p.download_bytes()
    res = cli(store, "ingest", "--model", "pythia-1b", "--checkpoints", "all", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "154 checkpoint(s)" in res.output and "activations kept for step143000" in res.output
    assert not store.exists()


def test_a_run_the_disk_cannot_hold_is_refused_naming_what_shrinks_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(NotEnoughDisk, match=r"--activations none .*every:K.*--tokens") as err:
        ingest(model=str(run), checkpoints="all", store=tmp_path / "store", progress=False, **SMALL)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "store").exists()
    res = cli(tmp_path / "store", "ingest", "--model", str(run), "--checkpoints", "all", "--dry-run",
              *SMALL_ARGS)
    assert res.exit_code == 0 and "would be refused" in res.output


def test_multi_checkpoint_runs_keep_activations_of_the_final_checkpoint_only(tmp_path: Path) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000, 2000))
    store = tmp_path / "store"
    ingest(model=str(run), checkpoints="all", store=store, progress=False, **SMALL)
    with negdb.connect(str(store)) as cat:
        acts = cat.sql("SELECT DISTINCT revision FROM activations")["revision"].to_list()
        stats = cat.sql("SELECT revision, count(*) AS n FROM neuron_stats GROUP BY 1 ORDER BY 1").rows()
    assert acts == ["step2000"]
    assert stats == [("step0", 192), ("step1000", 192), ("step2000", 192)]
    assert sorted(p.name for p in (store / "acts").glob("*/*")) == ["step2000"]
    other = tmp_path / "all"
    ingest(model=str(run), checkpoints="step0,step1000", activations="all", store=other, progress=False, **SMALL)
    with negdb.connect(str(other)) as cat:
        assert cat.sql("SELECT count(DISTINCT revision) AS n FROM activations")["n"][0] == 2


def _logical_bytes(group: Path) -> dict[str, int]:
    """Uncompressed bytes of every array under ``group`` (shape x item size, from each ``zarr.json``)."""
    import json

    import numpy as np

    out = {}
    for meta in group.rglob("zarr.json"):
        node = json.loads(meta.read_text())
        if node.get("node_type") == "array":
            out[str(meta.parent.relative_to(group))] = int(np.prod(node["shape"])) * np.dtype(node["data_type"]).itemsize
    return out


def test_md_inputs_are_kept_with_the_activations_only_and_the_plan_counts_them_exactly(tmp_path: Path) -> None:
    """The --md-pairs policy of a multi-checkpoint run: md statistics for every checkpoint, the MLP inputs of the
    md pairs stored only where activations are kept (the final checkpoint by default); the plan's bytes are the
    uncompressed bytes of what is written."""
    run = save_step_run(tmp_path, steps=(0, 1000, 2000))
    store, alone = tmp_path / "store", tmp_path / "alone"
    args = dict(tokens=512, seq_len=32, md_pairs=100)
    p = plan(model=str(run), checkpoints="all", store=store, **args)
    ingest(model=str(run), checkpoints="all", store=store, progress=False, **args)
    groups = sorted(store.glob("acts/*/*/*"))
    assert [g.parent.name for g in groups] == ["step2000"]  # no md rows (nor activations) for step0, step1000
    written = _logical_bytes(groups[0])
    assert sorted(k for k in written if k.startswith("md/")) == ["md/p100-s0/L000", "md/p100-s0/L001",
                                                                 "md/p100-s0/L002", "md/p100-s0/pairs"]
    assert [c.array_bytes for c in p.checkpoints] == [0, 0, sum(written.values())]
    assert p.array_bytes() == sum(written.values())
    # md statistics of a checkpoint whose md rows were not kept equal those of an ingest that keeps them
    ingest(model=str(run), checkpoints="step0", activations="all", store=alone, progress=False, **args)
    assert [g.parent.name for g in alone.glob("acts/*/*/*")] == ["step0"]
    with negdb.connect(str(store)) as cat, negdb.connect(str(alone)) as ref:
        sql = "SELECT * EXCLUDE (run_id) FROM neuron_stats WHERE revision = 'step0' ORDER BY layer, neuron"
        got, want = cat.sql(sql), ref.sql(sql)
    assert "md" in got.columns and got["md"].is_not_null().all()
    assert got.equals(want)


def test_plan_counts_stored_checkpoints_and_estimates_time_from_stored_runs(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000))
    store = tmp_path / "store"
    ingest(model=str(run), checkpoints="step0", store=store, progress=False, **SMALL)
    p = plan(model=str(run), checkpoints="all", store=store, **SMALL)
    assert [c.stored for c in p.checkpoints] == [True, False]  # step0 (same arguments) is stored
    assert len(p.times) == 1 and p.times[0].device_kind.startswith("cpu: ") and p.times[0].runs == 1
    assert p.times[0].seconds is not None and p.times[0].seconds > 0
    # a re-run loads nothing for a stored checkpoint
    from negdb.models import loading

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("a stored checkpoint was loaded"))
    res = ingest(model=str(run), checkpoints="step0", store=store, progress=False, **SMALL)
    assert [r.status for r in res] == ["already"] and res[0].slice_id and res[0].spec_id


def test_time_estimate_is_the_ratio_of_sums_per_device_kind() -> None:
    def run(kind: str, tokens: int, params: int, d_mlp: int, layers: int, stream_s: float, stats_s: float) -> dict:
        return {"config": {"device_kind": kind, "n_params": params, "d_mlp": d_mlp, "slice": {"n_tokens": tokens}},
                "timings": {"stream_s": stream_s, "stats_s": stats_s}, "layers": list(range(layers))}

    runs = [run("cpu: A", 1000, 10**6, 64, 2, 2.0, 1.0), run("cpu: A", 3000, 2 * 10**6, 64, 2, 10.0, 5.0),
            run("cuda: B", 1000, 10**6, 64, 2, 0.1, 1.0), {"config": {}, "timings": {}, "layers": []}]
    size = ModelSize(5 * 10**6, 4, 32, 128)
    est = {t.device_kind: t for t in estimate_times(runs, tokens=2000, size=size, layers=4, checkpoints=3)}
    fwd = (1000 * 10**6 + 3000 * 2 * 10**6) / 12.0
    stat = (1000 * 128 + 3000 * 128) / 6.0
    assert est["cpu: A"].runs == 2
    assert est["cpu: A"].seconds == pytest.approx(3 * (2000 * 5 * 10**6 / fwd + 2000 * 4 * 128 / stat))
    assert est["cuda: B"].seconds == pytest.approx(3 * (2000 * 5 * 10**6 / (10**10) + 2000 * 512 / 128000))


@pytest.fixture
def hub_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 'remote' hub (a hand-built cache of three revisions) and an empty local cache holding only step0;
    downloads copy a revision from the remote into the local cache and are recorded."""
    import huggingface_hub.constants as hfc

    from negdb.models import hub

    remote, commits = make_hub_cache(tmp_path / "remote", "EleutherAI/pythia-70m", ("step0", "step1000", "step2000"))
    local = tmp_path / "local" / "hub"
    repo = "models--EleutherAI--pythia-70m"
    events: list[str] = []

    def copy(rev: str) -> Path:
        commit = commits[rev]
        dst = local / repo / "snapshots" / commit
        shutil.copytree(remote / repo / "snapshots" / commit, dst)
        (local / repo / "refs").mkdir(parents=True, exist_ok=True)
        (local / repo / "refs" / rev).write_text(commit)
        return dst

    def fake_fetch(repo_id: str, revision: str) -> Path:
        assert repo_id == "EleutherAI/pythia-70m"
        events.append(f"fetch {revision}")
        return copy(revision)

    copy("step0")
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(local))
    monkeypatch.setenv("HF_HUB_CACHE", str(local))
    monkeypatch.setattr(hub, "fetch", fake_fetch)
    monkeypatch.setattr(hub, "can_download", lambda: True)
    return local / repo, commits, events


def test_downloaded_checkpoints_are_prefetched_then_removed(tmp_path: Path, hub_remote) -> None:
    repo, commits, events = hub_remote
    logs: list[str] = []

    def log(msg: str) -> None:
        logs.append(msg)
        if ": ingested " in msg:
            events.append(msg.split(":")[0])

    res = ingest(model="pythia-70m", checkpoints="step0,step1000,step2000", store=tmp_path / "store",
                 resources=Resources(overlap=False), progress=False, log=log, **SMALL)  # serial: ordered logs
    assert [r.status for r in res] == ["ingested"] * 3
    # step1000 and step2000 were downloaded, each before the previous checkpoint was ingested
    assert events == ["fetch step1000", "pythia-70m@step0", "fetch step2000", "pythia-70m@step1000",
                      "pythia-70m@step2000"]
    assert sorted(p.name for p in (repo / "snapshots").iterdir()) == [commits["step0"]]  # cached before: kept
    assert sum("removed from the Hugging Face cache" in m for m in logs) == 2
    with negdb.connect(str(tmp_path / "store")) as cat:
        rows = cat.sql("SELECT revision, commit FROM checkpoints ORDER BY step").rows()
    assert rows == [(r, commits[r]) for r in ("step0", "step1000", "step2000")]


def test_keep_weights_keeps_downloads(tmp_path: Path, hub_remote) -> None:
    repo, commits, events = hub_remote
    res = cli(tmp_path / "store", "ingest", "--model", "pythia-70m", "--checkpoints", "step0,step1000",
              "--keep-weights", *SMALL_ARGS)
    assert res.exit_code == 0, res.output
    assert events == ["fetch step1000"]
    assert sorted(p.name for p in (repo / "snapshots").iterdir()) == sorted([commits["step0"], commits["step1000"]])


def test_weights_are_hashed_and_identical_revisions_are_warned(tmp_path: Path) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000, 2000))
    weights = "model.safetensors"
    shutil.copy(run / "step1000" / weights, run / "step2000" / weights)  # step2000 serves step1000's weights
    logs: list[str] = []
    ingest(model=str(run), checkpoints="all", activations="none", store=tmp_path / "store", progress=False,
           log=logs.append, **SMALL)

    def digest(folder: Path) -> str:
        file = hashlib.sha256((folder / weights).read_bytes()).hexdigest()
        return hashlib.sha256(f"{weights}:{file}\n".encode()).hexdigest()

    with negdb.connect(str(tmp_path / "store")) as cat:
        stored = dict(cat.sql("SELECT revision, weights_sha256 FROM checkpoints").rows())
    assert stored == {r: digest(run / r) for r in ("step0", "step1000", "step2000")}
    warnings = [m for m in logs if m.startswith("warning:")]
    assert len(warnings) == 1 and "step2000 has the same weights as step1000" in warnings[0]
    assert "pythia#205" in warnings[0]
    # a later run of one of them alone still finds its twin in the store
    logs.clear()
    ingest(model=str(run), checkpoints="step1000", activations="all", store=tmp_path / "store", progress=False,
           log=logs.append, **SMALL)
    assert any("step1000 has the same weights as step2000" in m for m in logs)

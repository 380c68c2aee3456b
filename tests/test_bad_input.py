"""Bad input and damaged stores: one line, a non-zero exit, the store unchanged (issue 13, items 7-9).

Each case of the audit's list is a test: a broken model folder, a bad option, a store path that cannot be a
store, a damaged store file. Silent acceptances (a too-long --seq-len, --batch-tokens 0, an empty step folder,
a foreign folder adopted as a store, a deleted chunk read as zeros) are errors now.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import pytest

import negdb
from tests.ingest_helpers import TINY, assert_one_error, cli
from tests.tiny_models import save_step_run, save_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=7)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Path:
    """A store with one tiny ingest (copied by each test that damages it)."""
    store = tmp_path_factory.mktemp("base") / "store"
    assert cli(store, "ingest", "--model", str(model), *TINY).exit_code == 0
    return store


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (lock files aside) with its content hash: equal before and after = unchanged."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "locks" not in p.parts}


def copy_store(base: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(base, store)
    return store


def one_line_unchanged(store: Path, *args: str) -> str:
    before = fingerprint(store)
    res = cli(store, *args)
    assert_one_error(res)
    assert fingerprint(store) == before
    return res.stderr


# ------------------------------------------------------------------------------------------ models and options


def _model_copy(model: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(model, out)
    return out


@pytest.mark.parametrize("damage", ["garbage-config", "no-weights", "truncated-safetensors"])
def test_broken_model_folder(tmp_path: Path, model: Path, damage: str) -> None:
    folder = _model_copy(model, tmp_path)
    if damage == "garbage-config":
        (folder / "config.json").write_text("garbage{")
    elif damage == "no-weights":
        for w in folder.glob("*.safetensors"):
            w.unlink()
    else:
        (w,) = folder.glob("*.safetensors")
        w.write_bytes(w.read_bytes()[:1000])
    msg = one_line_unchanged(tmp_path / "store", "ingest", "--model", str(folder), *TINY)
    assert str(folder) in msg
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "quantum"], "--device quantum"),
    (["--batch-tokens", "0"], "batch_tokens"),
    (["--batch-tokens", "-5"], "batch_tokens"),
    (["--tokens", "4096", "--seq-len", "1024"], "longer than the context"),  # the tiny model's context is 128
])
def test_bad_options(tmp_path: Path, model: Path, args: list[str], message: str) -> None:
    base = ["--tokens", "512", "--seq-len", "32", "--md-pairs", "100", "--quiet"]
    msg = one_line_unchanged(tmp_path / "store", "ingest", "--model", str(model), *base, *args)
    assert message in msg
    assert not (tmp_path / "store").exists()


def test_empty_step_folder_is_an_error(tmp_path: Path) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000))
    (run / "step2000").mkdir()
    msg = one_line_unchanged(tmp_path / "store", "ingest", "--model", str(run), "--checkpoints", "all", *TINY)
    assert "step2000" in msg


# ------------------------------------------------------------------------------------------ store paths


def test_store_under_a_file(tmp_path: Path, model: Path) -> None:
    (tmp_path / "afile").write_text("x")
    msg = one_line_unchanged(tmp_path / "afile" / "store", "ingest", "--model", str(model), *TINY)
    assert "afile" in msg


def test_foreign_folder_is_not_adopted(tmp_path: Path, model: Path, base: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "tables" / "models").mkdir(parents=True)
    shutil.copy(next((base / "tables" / "models").glob("*.parquet")), foreign / "tables" / "models" / "x.parquet")
    for args in (["ingest", "--model", str(model), *TINY], ["sql", "SELECT * FROM models"]):
        assert "not a negdb store" in one_line_unchanged(foreign, *args)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "not empty" in one_line_unchanged(other, "ingest", "--model", str(model), *TINY)


def test_read_only_store(tmp_path: Path, model: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store on a read-only file system (simulated: root ignores file modes) refuses writes in one line."""
    import os

    store = copy_store(base, tmp_path)
    root = str(store.resolve())

    def readonly(fn):
        def wrapped(path, *a, **kw):
            if str(Path(path).resolve()).startswith(root) and (fn is not os.open or a[0] & (os.O_WRONLY | os.O_RDWR)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return fn(path, *a, **kw)
        return wrapped

    monkeypatch.setattr(os, "open", readonly(os.open))
    monkeypatch.setattr(os, "mkdir", readonly(os.mkdir))
    msg = one_line_unchanged(store, "ingest", "--model", str(model), "--layers", "0", "--seq-len", "16",
                             "--tokens", "256", "--md-pairs", "10", "--quiet")
    assert "read-only" in msg
    msg = one_line_unchanged(store, "select", "--model", str(model), "--top", "2", "--save", "s")
    assert "read-only" in msg


# ------------------------------------------------------------------------------------------ damaged stores


@pytest.mark.parametrize("damage", ["truncated", "folder", "empty"])
def test_damaged_marker(tmp_path: Path, base: Path, model: Path, damage: str) -> None:
    store = copy_store(base, tmp_path)
    marker = store / "negdb.json"
    if damage == "truncated":
        marker.write_text(marker.read_text()[:3])
    elif damage == "folder":
        marker.unlink()
        marker.mkdir()
    else:
        marker.write_text("")
    for args in (["sql", "SELECT 1"], ["ingest", "--model", str(model), *TINY], ["top"]):
        assert "negdb.json" in one_line_unchanged(store, *args)


def test_truncated_segment_check_and_repair(tmp_path: Path, base: Path) -> None:
    store = copy_store(base, tmp_path)
    (seg,) = (store / "tables" / "neuron_stats").rglob("*.parquet")
    seg.write_bytes(seg.read_bytes()[:200])
    for args in (["sql", "SELECT 1"], ["top"]):
        msg = one_line_unchanged(store, *args)
        assert seg.name in msg and "negdb repair" in msg
    check = cli(store, "check")
    assert check.exit_code == 1 and "damaged-segment" in check.output and seg.name in check.output
    rep = cli(store, "repair")
    assert rep.exit_code == 0 and "quarantined" in rep.output and "lost: the neuron_stats rows" in rep.output
    assert not seg.exists() and list((store / "quarantine").rglob(seg.name))
    assert cli(store, "check").exit_code == 0
    assert cli(store, "sql", "SELECT count(*) AS n FROM neurons").exit_code == 0


def _array_file(store: Path, pattern: str) -> Path:
    return sorted((store / "acts").glob(pattern))[0]


@pytest.mark.parametrize(("what", "pattern", "damage"), [
    ("preact shard", "*/*/*/preact/L001/c/0/0", "truncate"),
    ("preact shard", "*/*/*/preact/L001/c/0/0", "delete"),
    ("token ids", "*/*/*/token_ids/c/0", "delete"),
    ("token ids", "*/*/*/token_ids/c/0", "truncate"),
    ("md pairs", "*/*/*/md/*/pairs/c/0/0", "delete"),
    ("md inputs", "*/*/*/md/*/L001/c/0/0", "truncate"),
])
def test_damaged_array_is_an_error_not_zeros(tmp_path: Path, base: Path, model: Path, what: str, pattern: str,
                                            damage: str) -> None:
    """A truncated or deleted chunk: `neuron` and `analyze pairs` fail in one line naming the file (never
    `<|endoftext|>` contexts or zeros); check finds it, repair quarantines it, ingest restores it."""
    store = copy_store(base, tmp_path)
    path = _array_file(store, pattern)
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    rel = str(path.relative_to(store))
    commands = [["neuron", "--model", str(model), "--layer", "1", "--index", "3"],
                ["analyze", "pairs", "--model", str(model), "--layer", "1", "--index", "3"]]
    for args in commands if what != "md pairs" and what != "md inputs" else commands[1:]:
        before = fingerprint(store)
        res = cli(store, *args)
        assert_one_error(res)
        assert rel in res.stderr or str(path.parent.parent) in res.stderr, res.stderr
        assert fingerprint(store) == before
    assert cli(store, "check").exit_code == 1
    rep = cli(store, "repair")
    assert rep.exit_code == 0 and "quarantined" in rep.output, rep.output
    assert cli(store, "ingest", "--model", str(model), *TINY).exit_code == 0
    assert cli(store, "check").exit_code == 0
    for args in commands:
        res = cli(store, *args)
        assert res.exit_code == 0, res.output
    with negdb.connect(str(store)) as cat:
        assert cat.sql("SELECT count(*) AS n FROM activations")["n"][0] == 3


# ------------------------------------------------------------------------------------------ full disks


def test_disk_full_during_ingest(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error names the spooled arrays being written, the run is recorded as failed (not 'running'), and the
    same command resumes once there is space."""
    store = tmp_path / "store"
    args = ["ingest", "--model", str(model), "--tokens", "512", "--seq-len", "32", "--batch-tokens", "128",
            "--md-pairs", "100", "--quiet"]
    from negdb.ingest import stream
    from negdb.store import segments

    real_write, real_table = stream._write, segments.pq.write_table
    batches = {"n": 0}

    def write(*a, **kw):  # the third batch finds the disk full, and from then on nothing fits, not even a record
        batches["n"] += 1
        if batches["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*a, **kw)

    def write_table(table, where, *a, **kw):
        if batches["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_table(table, where, *a, **kw)

    monkeypatch.setattr(stream, "_write", write)
    monkeypatch.setattr(segments.pq, "write_table", write_table)
    res = cli(store, *args)
    assert res.exit_code == 2 and res.stderr.splitlines()[-1].startswith("error: "), res.output
    assert "spool.zarr" in res.stderr and "tables/runs" not in res.stderr and "resumes" in res.stderr
    with negdb.connect(str(store)) as cat:
        assert cat.sql("SELECT status FROM runs")["status"].to_list() == ["failed"]
    monkeypatch.undo()
    res = cli(store, *args)
    assert res.exit_code == 0 and "resuming run" in res.output, res.output
    with negdb.connect(str(store)) as cat:
        assert cat.sql("SELECT status FROM runs")["status"].to_list() == ["done"]
        assert cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0] == 3 * 64


def test_select_save_on_a_full_disk_claims_no_resume(tmp_path: Path, base: Path, model: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from negdb.store import segments

    store = copy_store(base, tmp_path)

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments.pq, "write_table", no_space)
    msg = one_line_unchanged(store, "select", "--model", str(model), "--top", "2", "--save", "s")
    assert "disk is full" in msg and "tables/neuron_set" in msg and "resume" not in msg

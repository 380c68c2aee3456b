"""``--store`` before or after the command's name, on every command; NEGDB_STORE still works."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from negdb.cli.main import main
from tests.ingest_helpers import TINY
from tests.tiny_models import save_tiny


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command that runs something, as its path of names below ``negdb``."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += command_paths(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


COMMANDS = command_paths(main)


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def test_the_command_list_is_complete() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"ingest", "models", "top", "runs", "sql", "schema", "select", "sets", "neuron", "serve", "ablate",
            "results", "analyze pos", "analyze layers", "analyze training", "analyze pairs", "report",
            "sweep"} <= names


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch):
    """Replace every command's body by one that records the store it was given; nothing is required."""
    stores: list[str] = []

    def record(*_a: object, **_k: object) -> None:
        stores.append(click.get_current_context().obj["store"])

    for path in COMMANDS:
        cmd = _command(path)
        monkeypatch.setattr(cmd, "callback", record)
        for p in cmd.params:
            monkeypatch.setattr(p, "required", False)
            if p.name != "store":
                monkeypatch.setattr(p, "callback", None)
    return stores


POSITIONS = ["before", "after", "both", "env", "env-and-after", "default"]


@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_store_before_or_after_the_command(path: tuple[str, ...], where: str, seen: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEGDB_STORE", raising=False)
    env = {}
    args = {"before": ["--store", "S1", *path],
            "after": [*path, "--store", "S1"],
            "both": ["--store", "S0", *path, "--store", "S1"],  # the later one wins
            "env": [*path],
            "env-and-after": [*path, "--store", "S1"],
            "default": [*path]}[where]
    if where.startswith("env"):
        env["NEGDB_STORE"] = "S1" if where == "env" else "S0"
    res = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen == ["negdb-store" if where == "default" else "S1"]


@pytest.mark.parametrize("path", [p for p in COMMANDS if len(p) > 1], ids=lambda p: " ".join(p))
def test_store_between_a_group_and_its_command(path: tuple[str, ...], seen: list[str]) -> None:
    res = CliRunner().invoke(main, [path[0], "--store", "S1", *path[1:]], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen == ["S1"]


def test_every_command_documents_store() -> None:
    for path in COMMANDS:
        res = CliRunner().invoke(main, [*path, "--help"])
        assert res.exit_code == 0 and "--store" in res.output, path


def test_ingest_then_query_with_store_after_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example as a user types it, with NEGDB_STORE pointing elsewhere (the option wins)."""
    model = save_tiny(tmp_path / "neox", "gpt_neox", seed=4)
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    monkeypatch.setenv("NEGDB_STORE", str(elsewhere))
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", "--model", str(model), *TINY, "--store", str(store)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (store / "negdb.json").is_file() and not elsewhere.exists()
    res = runner.invoke(main, ["sql", "SELECT count(*) AS n FROM neurons", "--format", "json", "--store", str(store)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"n": 3 * 64}]
    # NEGDB_STORE alone still names the store
    monkeypatch.setenv("NEGDB_STORE", str(store))
    res = runner.invoke(main, ["sql", "SELECT count(*) AS n FROM neurons", "--format", "json"],
                        catch_exceptions=False)
    assert json.loads(res.stdout) == [{"n": 3 * 64}]

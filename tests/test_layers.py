"""negdb's layers hold (import-linter's contracts in pyproject.toml), and breaking them fails this test.

The contracts: the layers (top to bottom ``cli | database``; ``report | service``; ``sweep``; ``analyze | hooks``;
``ablate``; ``query | evals``; ``ingest``; ``store``; ``models | stats | data``; ``values``; ``config | errors``),
the store never importing the read side, and no import cycle between siblings anywhere. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import lint_imports, mirror, package_dirs

pytestmark = pytest.mark.timeout(300)
needs_linter = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None and os.environ.get("CI") != "true",
    reason="import-linter is not installed: pip install -e '.[test]' (under CI=true this fails instead)")


@needs_linter
def test_the_contracts_hold() -> None:
    res = lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout
    # every package was read (the linked tree is complete)
    n_files = sum(1 for folder in package_dirs().values() for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts and not any(s.startswith(".") for s in p.relative_to(folder).parts))
    assert f"Analyzed {n_files} files" in res.stdout, res.stdout


@needs_linter
@pytest.mark.parametrize(("where", "line", "broken"), [
    ("store/_probe.py", "import negdb.query.sets\n", "the store never imports the read side"),
    ("models/_probe.py", "from negdb.ablate import controls\n", "negdb's layers"),
    ("errors_probe", "", "negdb's layers"),
    ("query/_probe.py", "import negdb.query.neuron\n", "no import cycles"),
])
def test_a_broken_contract_fails(tmp_path: Path, where: str, line: str, broken: str) -> None:
    """The check is live: one bad import in a copy of the tree breaks the named contract."""
    tree = mirror(tmp_path)
    pkg = tree / "negdb"
    if where == "errors_probe":  # negdb.errors, the bottom layer, importing the store
        target = pkg / "errors.py"
        text = target.read_text() + "\nfrom negdb.store import layout  # noqa\n"
        target.unlink()
        target.write_text(text)
    else:
        (pkg / where).write_text(line)
        if where == "query/_probe.py":  # and back: neuron -> _probe -> neuron
            target = pkg / "query" / "neuron.py"
            text = target.read_text() + "\nfrom negdb.query import _probe  # noqa\n"
            target.unlink()
            target.write_text(text)
    res = lint_imports(tree=tree)
    assert res.returncode != 0, res.stdout
    assert f"{broken}" in res.stdout and "BROKEN" in res.stdout, res.stdout


def test_importing_negdb_loads_only_errors_and_config() -> None:
    """The root package is used by every layer for negdb.errors / negdb.config: its API imports lazily."""
    code = "import sys, negdb; print(' '.join(sorted(m for m in sys.modules if m.startswith('negdb'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert set(out.stdout.split()) <= {"negdb", "negdb.errors", "negdb.config"}, out.stdout

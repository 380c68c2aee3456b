"""negdb's import graph, for the layer contract (``tests/test_layers.py``) and for finding cycles by hand.

negdb's packages live in sibling folders mapped onto one import name (``negdb`` is ``api/``, ``negdb.store`` is
``store/``, ...: ``[tool.setuptools.package-dir]`` in pyproject.toml), so tools that walk a package's folder
(grimp, and import-linter on top of it) see only ``api/``. :func:`mirror` lays the packages out as one ordinary
tree of links to the real files, which those tools read as they are.

    python tests/import_graph.py            # run import-linter's contracts (pyproject's [tool.importlinter])
    python tests/import_graph.py --cycles   # every import cycle between modules, shortest first
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Import name -> folder, from pyproject.toml."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items()}


def mirror(dest: Path, root: Path = ROOT) -> Path:
    """``dest/negdb/...``: every package's ``.py`` files linked into one tree; returns ``dest``."""
    for name, folder in sorted(package_dirs(root).items()):
        for src in folder.rglob("*.py"):
            rel = src.relative_to(folder)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            out = dest.joinpath(*name.split("."), rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.symlink_to(src)
    return dest


def lint_imports(root: Path = ROOT, *, tree: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` (import-linter) with pyproject's contracts, on ``tree`` (a :func:`mirror`; by default
    one made of ``root`` for this call)."""
    if tree is None:
        with tempfile.TemporaryDirectory(prefix="negdb-imports-") as tmp:
            return lint_imports(root, tree=mirror(Path(tmp), root))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from importlinter.cli import lint_imports_command;"
                                                               " lint_imports_command()"]
    return subprocess.run([*cmd, str(root / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


def graph(root: Path = ROOT):  # type: ignore[no-untyped-def]
    """grimp's import graph of the mirrored tree (only in an interpreter that has not imported ``negdb``)."""
    import grimp

    if "negdb" in sys.modules:
        raise RuntimeError("grimp would find the imported negdb (api/ only): build the graph in a fresh process")
    tmp = tempfile.mkdtemp(prefix="negdb-imports-")
    mirror(Path(tmp), root)
    sys.path.insert(0, tmp)
    try:
        return grimp.build_graph("negdb", cache_dir=None, exclude_type_checking_imports=True)
    finally:
        sys.path.remove(tmp)


def cycles(g) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Every module-level import cycle (one shortest cycle through each pair of mutually reachable modules)."""
    found: dict[frozenset, list[str]] = {}
    for a in sorted(g.modules):
        for b in sorted(g.find_modules_directly_imported_by(a)):
            back = g.find_shortest_chain(importer=b, imported=a)
            if back:
                cyc = [a, *back]
                key = frozenset(cyc)
                if key not in found or len(cyc) < len(found[key]):
                    found[key] = cyc
    return sorted(found.values(), key=lambda c: (len(c), c))


if __name__ == "__main__":
    if "--cycles" in sys.argv[1:]:
        found = cycles(graph())
        for cyc in found:
            print(" -> ".join(cyc))
        print(f"{len(found)} cycle(s)")
        raise SystemExit(1 if found else 0)
    res = lint_imports()
    print(res.stdout, res.stderr, sep="")
    raise SystemExit(res.returncode)

"""The bundled data under data/ (negdb.data): checksums, WikiText digest, BLiMP shape, packaging."""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import json
import os
import tomllib
from pathlib import Path

import pytest

from negdb.data import data_path

DATA = data_path("SHA256SUMS").parent
NOT_DATA = {"README.md", "SHA256SUMS", "__init__.py", "benchmarks.json"}  # benchmarks.json: definitions, not data
WIKI_TEST_RAW_SHA256 = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sums() -> dict[str, str]:
    out = {}
    for line in (DATA / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        out[name.lstrip("*")] = digest
    return out


def _data_files() -> set[str]:
    files = set()
    for root, dirs, names in os.walk(DATA):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for n in names:
            rel = Path(root, n).relative_to(DATA).as_posix()
            if rel not in NOT_DATA:
                files.add(rel)
    return files


def test_sha256sums_match_every_bundled_file():
    sums = _sums()
    assert len(sums) == 98
    assert set(sums) == _data_files(), "SHA256SUMS and the files in data/ differ (see data/README.md)"
    bad = [name for name, digest in sums.items() if _sha256(DATA / name) != digest]
    assert not bad, f"checksum mismatch: {bad}"


def test_wikitext_files_are_gzip_without_name_or_time():
    for name in ("wiki.test.raw.gz", "wiki.valid.tokens.gz", "wiki.test.tokens.gz"):
        head = (DATA / "wikitext-2" / name).read_bytes()[:10]
        assert head[:3] == b"\x1f\x8b\x08"
        assert head[3] & 0x08 == 0, f"{name}: gzip header stores a file name (use gzip -n)"
        assert head[4:8] == b"\0\0\0\0", f"{name}: gzip header stores a time stamp (use gzip -n)"


def test_decompressed_wiki_test_raw_digest():
    with gzip.open(DATA / "wikitext-2" / "wiki.test.raw.gz", "rb") as f:
        raw = f.read()
    assert len(raw) == 1_290_590
    assert hashlib.sha256(raw).hexdigest() == WIKI_TEST_RAW_SHA256


def test_blimp_has_67_paradigms_of_1000_pairs():
    blimp = DATA / "blimp"
    files = sorted(p.name[: -len(".jsonl.gz")] for p in blimp.glob("*.jsonl.gz"))
    assert len(files) == 67
    with open(blimp / "paradigms.tsv", encoding="utf-8", newline="") as f:
        index = list(csv.DictReader(f, delimiter="\t"))
    assert sorted(r["UID"] for r in index) == files
    assert all(r["n_pairs"] == "1000" for r in index)
    for uid in files:
        with gzip.open(blimp / f"{uid}.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == 1000, uid
        assert {r["UID"] for r in rows} == {uid}
        assert sorted(int(r["pairID"]) for r in rows) == list(range(1000)), uid
        assert all(r["sentence_good"] and r["sentence_bad"] for r in rows), uid


def test_package_data_globs_cover_every_bundled_file():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("pyproject.toml not found (installed package)")
    conf = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    patterns = conf["tool"]["setuptools"]["package-data"]["negdb.data"]
    src = Path(__file__).resolve().parents[1] / conf["tool"]["setuptools"]["package-dir"]["negdb.data"]
    covered = set()
    for pattern in patterns:  # setuptools expands package-data globs like glob.glob(recursive=True)
        for hit in glob.glob(os.path.join(glob.escape(str(src)), pattern), recursive=True):
            covered.add(Path(hit).relative_to(src).as_posix())
    wanted = set(_sums()) | {"README.md", "SHA256SUMS"}
    missing = sorted(wanted - covered)
    assert not missing, f"not matched by [tool.setuptools.package-data] 'negdb.data': {missing}"

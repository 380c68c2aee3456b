"""A lease object: the object-store form of the per-checkpoint ``flock`` (:mod:`negdb.store.locks`).

An object store has no locks and no renames. A writer that wants a unit of work takes a lease: the object
``leases/<key>/<generation>.json``, created with a conditional PUT (``If-None-Match: *``), so of two writers
creating one generation exactly one succeeds. The lease names its holder and an expiry; the holder renews it
(rewrites its own generation with a later expiry) while it works and marks it released at the end. A writer that
finds a live lease waits, polling, until the work is done (``done()``), the lease is released, or it expires (a
killed holder stops renewing); a released or expired lease is superseded by creating the next generation, again
conditionally, so of two writers taking over at once exactly one wins. Expiry is judged by the waiter's clock
against the holder's; the renewal period (a third of ``ttl_s``) leaves room for skew. A holder on this machine
(the same host name) whose process is gone counts as expired at once, so a command killed and started again
takes its work back without waiting for the lease to run out.

Leases only save work: correctness comes from the conditional PUT of the segments (the first publication wins),
so a lease that is taken over too early costs a duplicate computation, never a duplicate or lost row.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

PREFIX = "leases"


def _name(key: str, generation: int) -> str:
    return f"{PREFIX}/{key}/{generation:08d}.json"


def _latest(objects: Any, key: str) -> tuple[int, dict[str, Any]] | None:
    """The newest generation of the lease ``key`` and its content (None: never taken)."""
    names = [n for n in objects.list(f"{PREFIX}/{key}") if n.endswith(".json")]
    if not names:
        return None
    name = max(names)
    try:
        body = json.loads(objects.read(name))
    except (OSError, ValueError):  # being written or unreadable: treat as live for one more poll
        body = {"owner": "?", "expires": time.time() + 1.0, "released": False}
    return int(name.rsplit("/", 1)[1].removesuffix(".json")), body


def _gone_here(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:nonce``) is a process of this machine that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user's process
        return False
    return False


def _live(body: dict[str, Any]) -> bool:
    """Whether a lease's content says it is held: not released, not expired, its holder not gone."""
    return (not body.get("released") and body.get("expires", 0) > time.time()
            and not _gone_here(str(body.get("owner", ""))))


def _body(owner: str, ttl_s: float, released: bool = False) -> bytes:
    return json.dumps({"owner": owner, "expires": time.time() + ttl_s, "released": released}).encode()


@contextlib.contextmanager
def held(objects: Any, key: str, *, ttl_s: float = 600.0, poll_s: float = 2.0,
         done: Callable[[], bool] = lambda: False, on_wait: Callable[[str], None] | None = None
         ) -> Iterator[bool]:
    """Hold the lease ``key`` of ``objects`` (a store's :class:`~negdb.store.objects.LocalObjects` or
    :class:`~negdb.store.objects.FsspecObjects`) for the block; yields True once it is held, or False without
    holding it when ``done()`` turns true while waiting (another writer did the work)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    told = False
    while True:
        if done():
            yield False
            return
        latest = _latest(objects, key)
        if latest is not None and _live(latest[1]):
            if on_wait is not None and not told:
                on_wait(str(latest[1].get("owner")))
                told = True
            time.sleep(poll_s)
            continue
        generation = 0 if latest is None else latest[0] + 1
        if objects.put_new(_name(key, generation), _body(owner, ttl_s)):
            break
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            with contextlib.suppress(Exception):  # a failed renewal is retried; the lease only saves work
                objects.replace(_name(key, generation), _body(owner, ttl_s))

    renewer = threading.Thread(target=renew, name=f"negdb-lease-{key}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):
            objects.replace(_name(key, generation), _body(owner, 0.0, released=True))


def finished(objects: Any, *, grace_s: float) -> dict[str, list[str]]:
    """Leases no one holds: for each key whose newest generation was released (or expired) more than ``grace_s``
    seconds ago, the names of its generations as listed now (what ``negdb gc`` removes). A generation created
    after this listing is not among them, so a writer taking the lease meanwhile keeps it; and a name removed can
    only be created again after its removal, so removing these never removes a lease taken since."""
    by_key: dict[str, list[str]] = {}
    for name in objects.list(PREFIX):
        if name.endswith(".json"):
            by_key.setdefault(name[len(PREFIX) + 1:].rsplit("/", 1)[0], []).append(name)
    now = time.time()
    out = {}
    for key, names in sorted(by_key.items()):
        try:
            body = json.loads(objects.read(max(names)))
        except (OSError, ValueError):  # gone or being written: leave it to a later gc
            continue
        ended = float(body.get("expires", 0))  # a released lease's expiry is its release time
        if (body.get("released") or ended <= now) and now - ended >= grace_s:
            out[key] = sorted(names)
    return out

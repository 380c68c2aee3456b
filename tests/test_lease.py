"""Lease objects (negdb.store.lease), the object-store form of the per-checkpoint flock: one holder at a time,
waiters see the work done or take over a released or expired lease, of two takers exactly one wins."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from negdb.store import lease
from negdb.store.objects import LocalObjects


def test_one_holder_at_a_time_and_the_next_generation_after_release(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    inside: list[int] = []
    overlaps: list[int] = []
    waited: list[str] = []

    def worker(i: int) -> None:
        with lease.held(objects, "k", poll_s=0.02, on_wait=waited.append) as mine:
            assert mine
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(i)
            time.sleep(0.2)
            inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert len(waited) == 2  # each waiter is told once who holds it
    names = objects.list("leases/k")
    assert names == [f"leases/k/{g:08d}.json" for g in range(3)]  # one generation per holder
    assert all(json.loads(objects.read(n))["released"] for n in names)


def test_a_waiter_stops_when_the_work_is_done(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    finished = threading.Event()
    got: list[bool] = []

    def waiter() -> None:
        with lease.held(objects, "k", poll_s=0.02, done=finished.is_set) as mine:
            got.append(mine)

    with lease.held(objects, "k") as mine:
        assert mine
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.1)
        finished.set()  # the holder published: the waiter does not take the lease
        t.join()
    assert got == [False]
    assert objects.list("leases/k") == ["leases/k/00000000.json"]


def test_an_expired_lease_is_taken_over_by_exactly_one(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    # a holder that died: its lease was never released and is no longer renewed
    objects.put_new("leases/k/00000000.json", json.dumps({"owner": "dead:1", "expires": time.time() - 1,
                                                         "released": False}).encode())
    winners: list[int] = []
    barrier = threading.Barrier(2)

    def taker(i: int) -> None:
        barrier.wait()
        with lease.held(objects, "k", poll_s=0.02) as mine:
            assert mine
            winners.append(i)
            time.sleep(0.1)

    threads = [threading.Thread(target=taker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(winners) == [0, 1]  # both ran, one after the other (generations 1 and 2)
    assert objects.list("leases/k")[-1] == "leases/k/00000002.json"


def test_a_holder_renews_its_lease(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    with lease.held(objects, "k", ttl_s=0.3) as mine:
        assert mine
        first = json.loads(objects.read("leases/k/00000000.json"))["expires"]
        time.sleep(0.5)
        later = json.loads(objects.read("leases/k/00000000.json"))
        assert later["expires"] > first and not later["released"]  # renewed, still live past the first expiry


def test_a_lease_of_a_process_gone_from_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    objects = LocalObjects(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs (a killed command)
    for generation, (host, pid) in enumerate([(socket.gethostname(), gone.pid), ("elsewhere", gone.pid),
                                              (socket.gethostname(), os.getpid())]):
        objects.put_new(f"leases/k{generation}/00000000.json", json.dumps(
            {"owner": f"{host}:{pid}:abc", "expires": time.time() + 600, "released": False}).encode())
    with lease.held(objects, "k0", poll_s=0.02) as mine:  # not waiting ten minutes for the expiry
        assert mine
    assert objects.list("leases/k0")[-1] == "leases/k0/00000001.json"
    for key in ("k1", "k2"):  # another machine's holder, or one still running here: still held
        told: list[str] = []
        with lease.held(objects, key, poll_s=0.02, done=lambda: bool(told), on_wait=told.append) as mine:
            assert not mine


def test_finished_lists_the_leases_no_one_holds_after_the_grace(tmp_path: Path) -> None:
    """What ``negdb gc`` removes: every generation of a key whose newest one was released or expired more than
    the grace ago; never a live lease."""
    objects = LocalObjects(tmp_path)
    for _ in range(2):  # two generations of "done": taken, released, taken again, released
        with lease.held(objects, "done"):
            pass
    objects.put_new(lease._name("expired", 0), json.dumps({"owner": "elsewhere:1:x", "expires": time.time() - 5,
                                                            "released": False}).encode())
    with lease.held(objects, "live") as mine:
        assert mine
        assert lease.finished(objects, grace_s=0) == {
            "done": [lease._name("done", 0), lease._name("done", 1)], "expired": [lease._name("expired", 0)]}
        assert lease.finished(objects, grace_s=3) == {"expired": [lease._name("expired", 0)]}
        assert lease.finished(objects, grace_s=3600) == {}
    assert "live" in lease.finished(objects, grace_s=0)  # released now

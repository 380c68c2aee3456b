"""The service's request limits (issue 13, item 6): body, URL and header sizes, a bounded queue, queries of
clients that went away cancelled, and /health answering within 1 s throughout."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_service import _free_port
from tests.test_sql_safety import sql_store

SLOW = "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sql_store(tmp_path_factory)


def start(store: Path, *args: str) -> tuple[subprocess.Popen, httpx.Client]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "negdb.cli", "--store", str(store), "serve", "--host", "127.0.0.1",
                             "--port", str(port), *args], stdout=subprocess.DEVNULL,
                            stderr=tempfile.TemporaryFile())  # not a pipe: nobody reads it, a full one would block
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/health").status_code == 200:
                return proc, client
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "negdb serve did not start"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[httpx.Client]:
    proc, client = start(store, "--timeout", "20", "--max-concurrent", "1", "--max-queued", "2",
                         "--max-body", "100000")
    yield client
    client.close()
    proc.terminate()
    proc.wait(30)


def health_ms(client: httpx.Client) -> float:
    start = time.perf_counter()
    assert client.get("/health", timeout=10).status_code == 200
    return (time.perf_counter() - start) * 1000


def test_body_over_the_limit_is_413(server: httpx.Client) -> None:
    res = server.post("/sql", json={"sql": "SELECT 1 -- " + "x" * 200_000})
    assert res.status_code == 413 and "limit of 100,000 bytes" in res.json()["error"]

    def chunks():  # no Content-Length: the streamed body is counted
        for _ in range(50):
            yield b"x" * 10_000

    res = server.post("/sql", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    assert server.post("/sql", json={"sql": "SELECT 42 AS x"}).json()["rows"] == [[42]]


def test_url_and_headers_over_the_limits(server: httpx.Client) -> None:
    res = server.get("/neurons", params={"where": "layer = 1 OR " * 4000 + "layer = 2"})
    assert res.status_code == 414 and "POST /sql" in res.json()["error"]
    res = server.get("/health", headers={f"x-h{i}": "v" * 1000 for i in range(70)})
    assert res.status_code == 431


def test_queue_is_bounded_and_health_answers(server: httpx.Client) -> None:
    """One query slot, two waiting: of 8 slow requests at once, the extra ones get 503 with Retry-After at once,
    and /health answers within 1 s meanwhile (the clients give up after 6 s: their queries are cancelled)."""
    base = str(server.base_url)
    codes: list[int] = []
    retry: list[str | None] = []

    def ask() -> None:
        with httpx.Client(base_url=base, timeout=6) as c:
            try:
                res = c.post("/sql", json={"sql": SLOW})
            except httpx.TimeoutException:
                codes.append(0)
                retry.append(None)
                return
            codes.append(res.status_code)
            retry.append(res.headers.get("retry-after"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    during = [health_ms(server) for _ in range(5)]
    for t in threads:
        t.join()
    assert codes.count(503) >= 5, codes
    assert all(r == "1" for c, r in zip(codes, retry) if c == 503)
    # the median within the 1 s; no single answer slower than 3 s (a loaded shared test machine stalls
    # any process now and then; starvation, the old failure, took minutes)
    assert sorted(during)[2] < 1000 and max(during) < 3000, during
    assert health_ms(server) < 3000


def _wait_idle(server: httpx.Client, within_s: float = 60.0) -> None:
    """Wait until a trivial query gets the (one) query slot at once: nothing else runs or waits."""
    deadline = time.monotonic() + within_s
    while True:
        start = time.monotonic()
        res = server.post("/sql", json={"sql": "SELECT 1"})
        if res.status_code == 200 and time.monotonic() - start < 1.0:
            return
        assert time.monotonic() < deadline, f"the server never became idle: {res.status_code} {res.text}"
        time.sleep(0.5)


def test_query_of_a_client_that_went_away_is_cancelled(server: httpx.Client) -> None:
    """With one query slot: a client gives up on a slow query after 1 s; the next query does not wait for the
    abandoned one's 20 s time limit."""
    base = str(server.base_url)
    _wait_idle(server)  # the previous test's abandoned queries must be gone first: they are what it checks
    with httpx.Client(base_url=base, timeout=1.0) as impatient:
        with pytest.raises(httpx.TimeoutException):
            impatient.post("/sql", json={"sql": SLOW})
    start = time.monotonic()
    res = server.post("/sql", json={"sql": "SELECT 7 AS x"})
    assert res.status_code == 200 and res.json()["rows"] == [[7]]
    assert time.monotonic() - start < 8

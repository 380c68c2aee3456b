"""Run the real ``negdb serve`` in a subprocess on a free loopback port (browser tests, bench scripts)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(store: Path, *args: str, timeout_s: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``(base URL, process)`` of ``negdb --store STORE serve ARGS`` once ``/health`` answers; stopped on exit."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # not a pipe: a server that writes much never blocks on it
    proc = subprocess.Popen([sys.executable, "-m", "negdb.cli", "--store", str(store), "serve", "--host", "127.0.0.1",
                             "--port", str(port), *args], stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"negdb serve exited with {proc.returncode}: {log.read()}")
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"negdb serve did not answer /health within {timeout_s:g} s")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

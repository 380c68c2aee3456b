"""Run the query service with uvicorn (``negdb serve``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from negdb.service.app import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, create_app
from negdb.service.limits import DEFAULT_MAX_QUEUED, H11_MAX_EVENT, Limits


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(store: str | Path, host: str = "127.0.0.1", port: int = 8765, max_rows: int = DEFAULT_MAX_ROWS,
          timeout_s: float = DEFAULT_TIMEOUT_S, *, max_concurrent: int | None = None,
          max_queued: int = DEFAULT_MAX_QUEUED, max_body: int = Limits.max_body, allow_writes: bool = False,
          log_level: str = "warning", echo=print) -> None:
    """Serve the store over HTTP until interrupted (Ctrl-C): read-only unless ``allow_writes``."""
    import uvicorn

    app = create_app(store, max_rows=max_rows, timeout_s=timeout_s, max_concurrent_queries=max_concurrent,
                     max_queued=max_queued, max_body=max_body, allow_writes=allow_writes)
    shown = f"[{host}]" if ":" in host else host
    echo(f"negdb: serving {Path(store).resolve()} {'(the browser may save sets)' if allow_writes else 'read-only'} "
         f"on http://{shown}:{port} (browser: http://{shown}:{port}/ui; docs: http://{shown}:{port}/docs; at most "
         f"{max_rows:,} rows and {timeout_s:g} s per query)")
    if not is_loopback(host):
        echo(f"negdb: note: {host} is not a loopback address: every machine that can reach it can read the store")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5, h11_max_incomplete_event_size=H11_MAX_EVENT)
    uvicorn.Server(config).run()

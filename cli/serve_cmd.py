"""``negdb serve``: the read-only HTTP query service."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default: only this machine can connect).")
@click.option("--port", default=8765, show_default=True, type=int, help="TCP port.")
@click.option("--max-rows", default=10_000, show_default=True, type=int,
              help="Most rows one answer returns (clients may ask for fewer; more set truncated=true).")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=float,
              help="Seconds after which a query is stopped (HTTP 408).")
@click.option("--max-concurrent", default=None, type=click.IntRange(min=1),
              help="Queries run at once [default: twice the CPU count].")
@click.option("--max-queued", default=16, show_default=True, type=click.IntRange(min=0),
              help="Requests that may wait for a query slot; more get 503 with Retry-After.")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(min=1),
              help="Largest request body in bytes (HTTP 413 above it).")
@click.option("--allow-writes", is_flag=True,
              help="Let the browser save search results as neuron sets (read-only by default).")
@click.pass_obj
def serve(obj: dict, host: str, port: int, max_rows: int, timeout_s: float, max_concurrent: int | None,
          max_queued: int, max_body: int, allow_writes: bool) -> None:
    """Serve the store over HTTP: the neuron browser (/ui) and the read-only query API (docs at /docs)."""
    from negdb.errors import BadArgument
    from negdb.service.server import serve as run
    from negdb.store.bounds import on_stuck

    on_stuck(None)  # a server never ends itself for one query that outlives its interrupt

    if not 0 < port < 65536:
        raise BadArgument(f"--port must be between 1 and 65535 (got {port})")
    run(obj["store"], host=host, port=port, max_rows=max_rows, timeout_s=timeout_s, max_concurrent=max_concurrent,
        max_queued=max_queued, max_body=max_body, allow_writes=allow_writes, echo=click.echo)

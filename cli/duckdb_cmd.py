"""``negdb duckdb``: the store as a DuckDB database file (``<store>/negdb.duckdb``) for the ``duckdb`` shell."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click


@click.command("duckdb")
@click.option("--shell", is_flag=True, help="Open it in the duckdb shell (the `duckdb` command, e.g. from PyPI's "
              "duckdb-cli) instead of printing how to.")
@click.option("--force", is_flag=True, help="Write the file even if it is current.")
@click.pass_obj
def duckdb_cmd(obj: dict, shell: bool, force: bool) -> None:
    """Write or refresh STORE/negdb.duckdb (views over the segments) and print the command that opens it.

    The file is kept current by every command that writes to the store; this command is for stores written
    before it existed, or to open the shell: `negdb duckdb --shell`.
    """
    from negdb.errors import NotFound, StoreError
    from negdb.store import duckfile

    root = Path(obj["store"]).expanduser()
    if not (root / "negdb.json").is_file():
        raise StoreError(f"{root} is not a negdb store (no negdb.json): pass the right --store")
    written = duckfile.ensure(root, force=force)
    if shell:
        binary = shutil.which("duckdb")
        if binary is None:
            raise NotFound("no `duckdb` command on PATH: `pip install duckdb-cli`, or run: "
                             + duckfile.shell_line(root))
        argv = duckfile.shell_command(root, binary)
        os.execv(binary, argv)
    click.echo(f"{duckfile.file_path(root)} ({'written' if written else 'current'}): views over the store's "
               "segments; open it read-only with")
    click.echo("  " + duckfile.shell_line(root))

"""The ``negdb`` command line: a thin layer over the Python API."""

from __future__ import annotations

import os
import sys

# torch's OpenMP threads otherwise spin between parallel regions and starve negdb's writer thread
# (measured in bench/RESULTS.md); must be set before torch is imported. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from negdb.errors import NegdbError  # noqa: E402


def _stuck(message: str) -> None:
    """A user query that ignores its interrupt (negdb.store.bounds): the CLI has nothing else to do, so it ends
    with the time-out error instead of waiting (nothing is being written: user SQL only reads)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def _own_process() -> bool:
    """Whether this process is the `negdb` command itself (not a Python program or test calling the group)."""
    entry = sys.argv[0] if sys.argv else ""
    return os.path.basename(entry) == "negdb" or entry.endswith(os.path.join("cli", "__main__.py"))


class _Group(click.Group):
    """Print NegdbError as one line and exit non-zero; Ctrl-C says how to resume."""

    def invoke(self, ctx: click.Context) -> object:
        if _own_process():
            from negdb.store.bounds import on_stuck

            on_stuck(_stuck)
        try:
            return super().invoke(ctx)
        except NegdbError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume", err=True)
            sys.exit(130)


STORE_HELP = ("Store folder (Zarr arrays and catalog segments), or an object-store URL such as s3://bucket/prefix; "
              "env NEGDB_STORE.")


@click.group(cls=_Group)
@click.option("--store", envvar="NEGDB_STORE", default="negdb-store", show_default=True, help=STORE_HELP)
@click.version_option(package_name="negdb")
@click.pass_context
def main(ctx: click.Context, store: str) -> None:
    """negdb: a neuron-statistics database for language-model interpretability.

    Every command takes --store before or after its name (after wins): `negdb --store S ingest ...` and
    `negdb ingest ... --store S` are the same.
    """
    ctx.obj = {"store": store}


def _store_after(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--store`` given after a command's name: it replaces the one before (or the default / NEGDB_STORE)."""
    if value is not None:
        ctx.find_root().ensure_object(dict)["store"] = value


def store_option() -> click.Option:
    """The ``--store`` every subcommand (and sub-group) accepts after its name."""
    return click.Option(["--store"], default=None, expose_value=False, is_eager=True, callback=_store_after,
                        metavar="PATH", help=STORE_HELP + " May also come before the command.")


def add_store_options(group: click.Group) -> None:
    """Give every command below ``group`` (recursively) a ``--store`` of its own."""
    for cmd in group.commands.values():
        if not any(isinstance(p, click.Option) and "--store" in p.opts for p in cmd.params):
            cmd.params.append(store_option())
        if isinstance(cmd, click.Group):
            add_store_options(cmd)


def _register() -> None:
    from negdb.cli import ingest_cmd, models_cmd, serve_cmd, top_cmd

    main.add_command(models_cmd.models)
    main.add_command(ingest_cmd.ingest)
    main.add_command(top_cmd.top)
    main.add_command(top_cmd.runs)
    from negdb.cli import sql_cmd

    main.add_command(sql_cmd.sql)
    main.add_command(sql_cmd.schema)
    from negdb.cli import neuron_cmd, select_cmd

    main.add_command(select_cmd.select_cmd)
    main.add_command(select_cmd.sets_cmd)
    main.add_command(neuron_cmd.neuron)
    main.add_command(serve_cmd.serve)
    from negdb.cli import ablate_cmd

    main.add_command(ablate_cmd.ablate)
    main.add_command(ablate_cmd.results)
    from negdb.cli import analyze_cmd, report_cmd

    main.add_command(analyze_cmd.analyze)
    main.add_command(report_cmd.report)
    from negdb.cli import sweep_cmd

    main.add_command(sweep_cmd.sweep)
    from negdb.cli import check_cmd

    main.add_command(check_cmd.check)
    main.add_command(check_cmd.repair)
    from negdb.cli import merge_cmd

    main.add_command(merge_cmd.merge_cmd)
    main.add_command(merge_cmd.export_cmd)
    main.add_command(merge_cmd.gc_cmd)
    from negdb.cli import duckdb_cmd

    main.add_command(duckdb_cmd.duckdb_cmd)
    from negdb.cli import lmeval_cmd

    main.add_command(lmeval_cmd.lm_eval_cmd)
    add_store_options(main)


_register()

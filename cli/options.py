"""Click options shared by the commands that ablate (``ablate``, ``analyze pos|layers|training``, ``sweep``).

Each option is declared once here, with its help text. ``@options("model", "checkpoint", ..., seeds=1)`` adds
the named options to a command in that order; a keyword argument overrides an option's default for that command
(a default other than None is then shown in ``--help``), and ``helps={"seed": "..."}`` its help text. Options a
command declares itself can sit between two ``@options(...)`` lines, so ``--help`` keeps the command's order.
:func:`emit` is the commands' common tail: print the rendered text, a status line on stderr, write ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from negdb.store.segments import atomic_write_bytes

F = TypeVar("F", bound=Callable[..., Any])

_LIMIT = ("Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), seeded subsample: "
          "N, or N,suite=200,tse=20 to set some benchmarks apart.")

SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "model": (("--model",), {"required": True,
                             "help": "Model key, alias, folder or hub id (as given to `negdb ingest`)."}),
    "checkpoint": (("--checkpoint",), {"default": None,
                                       "help": "Checkpoint (default: the one the set's statistics come from)."}),
    "where": (("--where",), {"default": None,
                             "help": "Ablate the neurons matching this SQL expression, e.g. 'w_dist > 0.9'."}),
    "set": (("--set", "set_name"), {"default": None, "help": "Ablate a saved neuron set (`negdb sets`)."}),
    "top": (("--top",), {"default": None, "help": "Ablate the top K per layer by --by: 1%, 0.01 or a count."}),
    "by": (("--by",), {"default": "w_dist", "show_default": True, "help": "Statistic ranked by --top."}),
    "layers": (("--layers",), {"default": None, "help": "Restrict the set to layers, e.g. 0-3,7."}),
    "mode": (("--mode",), {"default": "neg", "show_default": True,
                           "help": "Intervention: neg (zero negative pre-activations), pos, both, mean, posrelu, "
                                   "signflip."}),
    "evals": (("--evals",), {"default": "ppl,blimp,tse,suite", "show_default": True,
                             "help": "Benchmarks and groups (ppl, grammar, suite, blimp, tse, arc_easy, ...), "
                                     "comma-separated."}),
    "controls": (("--controls",), {"default": "random,ppl-matched", "show_default": True,
                                   "help": "Controls: random, ppl-matched, or none."}),
    "seeds": (("--seeds",), {"default": 3, "show_default": True, "type": int,
                             "help": "Random control sets (seeds --seed, +1, ...)."}),
    "seed": (("--seed",), {"default": 0, "show_default": True, "type": int,
                           "help": "First random-control seed; bootstrap seed."}),
    "limit": (("--limit",), {"default": None, "help": _LIMIT}),
    "sample_seed": (("--sample-seed",), {"default": 0, "show_default": True, "type": int,
                                         "help": "Seed of the --limit subsample."}),
    "ppl_tokens": (("--ppl-tokens",), {"default": None, "type": int,
                                       "help": "WikiText-2 test tokens for perplexity (default: all)."}),
    "probe_tokens": (("--probe-tokens",), {"default": 16384, "show_default": True, "type": int,
                                           "help": "WikiText-2 tokens of each perplexity-matching probe."}),
    "tolerance": (("--tolerance",), {"default": 0.05, "show_default": True, "type": float,
                                     "help": "ppl-matched: accept within this share of the ablation's perplexity "
                                             "increase."}),
    "resolution": (("--resolution",), {"default": 0.005, "show_default": True, "type": float,
                                       "help": "ppl-matched: grid of fractions searched (0.005 = 0.5% of each "
                                               "layer)."}),
    "max_fraction": (("--max-fraction",), {"default": 0.9, "show_default": True, "type": float,
                                           "help": "ppl-matched: largest fraction."}),
    "bos": (("--bos",), {"default": "lm-eval", "show_default": True, "type": click.Choice(["lm-eval", "model"]),
                         "help": "BOS policy: lm-eval (BOS only before an empty context) or model (the family's "
                                 "policy)."}),
    "window": (("--window",), {"default": None, "type": int,
                               "help": "Perplexity window in tokens (default: the model's context)."}),
    "batch_tokens": (("--batch-tokens",), {"default": 8192, "show_default": True, "type": int,
                                           "help": "Padded tokens per forward pass."}),
    "device": (("--device",), {"default": "auto", "show_default": True, "help": "cpu, cuda, cuda:N or auto."}),
    "n_boot": (("--n-boot",), {"default": 1000, "show_default": True, "type": int,
                               "help": "Bootstrap draws of the CIs."}),
    "format": (("--format", "fmt"), {"default": "table", "show_default": True,
                                     "type": click.Choice(["table", "json", "csv"])}),
    "out": (("--out",), {"default": None, "type": click.Path(dir_okay=False),
                         "help": "Also write the output here."}),
    "quiet": (("--quiet",), {"is_flag": True, "help": "No progress bars."}),
}
"""Option key -> (click parameter declarations, click keyword arguments)."""


def _key(name: str) -> str:
    key = name.lstrip("-").replace("-", "_")
    if key not in SHARED:
        raise KeyError(f"no shared option {name!r}; the shared ones: {', '.join(SHARED)}")
    return key


def options(*names: str, helps: Mapping[str, str] | None = None, **defaults: Any) -> Callable[[F], F]:
    """A decorator adding the shared options ``names`` (``"n-boot"`` or ``"n_boot"``) in that order.

    ``defaults``: per-command defaults by key (``seeds=1``); ``helps``: per-command help texts by key.
    """
    keys = [_key(n) for n in names]
    extra = [_key(k) for k in [*defaults, *(helps or {})] if _key(k) not in keys]
    if extra:
        raise KeyError(f"defaults or helps for options not added: {', '.join(extra)}")

    def decorate(fn: F) -> F:
        for key in reversed(keys):  # click lists options in the reverse order they are applied
            decls, kw = SHARED[key]
            kw = dict(kw)
            if key in defaults:
                kw["default"] = defaults[key]
                if defaults[key] is not None:
                    kw["show_default"] = True
            if helps and key in helps:
                kw["help"] = helps[key]
            fn = click.option(*decls, **kw)(fn)
        return fn

    return decorate


def emit(text: str, out: str | None, status: str | None = None) -> None:
    """Print ``text``, then ``status`` (if any) on stderr; write ``text`` and a newline to ``out`` atomically."""
    click.echo(text)
    if status is not None:
        click.echo(status, err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())

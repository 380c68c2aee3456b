"""``negdb lm-eval``: lm-evaluation-harness tasks under a negdb intervention, stored in the catalog."""

from __future__ import annotations

import click

from negdb.cli.groups import SET_FLAGS, device_option, mode_option
from negdb.cli.options import emit, options


def _set_flags(fn):  # type: ignore[no-untyped-def]
    """``negdb ablate``'s --model --checkpoint --where --set --top --by --layers, none of the pickers required."""
    helps = {"where": "Ablate the neurons matching this SQL expression (with none of --where, --set and --top the "
                      "unablated checkpoint alone is evaluated)."}
    for f in reversed(SET_FLAGS):
        fn = click.option(*f.decls, f.key, **{**f.kw, **({"help": helps[f.key]} if f.key in helps else {})})(fn)
    return fn


@click.command("lm-eval")
@_set_flags
@click.option("--save", default=None, help="Save the picked set under this name (default: auto-<hash>).")
@mode_option()
@click.option("--tasks", required=True, help="lm-eval tasks, groups or tags, comma-separated "
              "(`lm-eval ls tasks`), e.g. blimp_anaphor_gender_agreement,arc_easy.")
@click.option("--include-path", "include_path", multiple=True, type=click.Path(exists=True),
              help="Folder of your own lm-eval YAML tasks (repeatable).")
@click.option("--num-fewshot", type=int, default=None, help="Few-shot examples (default: the task's).")
@click.option("--limit", type=int, default=None, help="Documents per task (lm-eval's --limit; default: all).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="lm-eval batch size.")
@click.option("--fewshot-seed", type=int, default=1234, show_default=True, help="Seed of the few-shot samples.")
@click.option("--apply-chat-template", is_flag=True, help="Format prompts with the tokenizer's chat template.")
@click.option("--gen-kwargs", default=None, help="Generation arguments for generate_until tasks, e.g. "
              "temperature=0,max_gen_toks=64.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also evaluate the unablated checkpoint (stored once) and show the difference.")
@device_option()
@options("format", "out", helps={"out": "Also write the table here."})
@click.pass_obj
def lm_eval_cmd(obj: dict, model: str, checkpoint: str | None, where: str | None, set_name: str | None,
                top: str | None, by: str, layers: str | None, save: str | None, mode: str, tasks: str,
                include_path: tuple[str, ...], num_fewshot: int | None, limit: int | None, batch_size: int,
                fewshot_seed: int, apply_chat_template: bool, gen_kwargs: str | None, baseline: bool, device: str,
                fmt: str, out: str | None) -> None:
    """Run lm-evaluation-harness tasks on a checkpoint with a neuron set's pre-activations intervened on.

    Each task's result is stored (eval_results rows with benchmark 'lm-eval:<task>' and the set's set_id,
    eval_metrics, per-document eval_items), so a repeated command reads it back.
    """
    from negdb.ablate.lmeval import LmEvalOptions, Selection, run
    from negdb.cli import parse
    from negdb.query.setspec import SetSpec

    neurons = None
    if where is not None or set_name is not None or top is not None:
        neurons = SetSpec(model=model, checkpoint=checkpoint, where=where, set_name=set_name, top=parse.k(top),
                          by=by, layers=parse.layers(layers))
    sel = Selection(model=model, checkpoint=checkpoint, neurons=neurons, mode=mode, save=save)
    opts = LmEvalOptions(tasks=tasks, include_path=tuple(include_path), num_fewshot=num_fewshot, limit=limit,
                         batch_size=batch_size, fewshot_seed=fewshot_seed, apply_chat_template=apply_chat_template,
                         gen_kwargs=gen_kwargs, baseline=baseline, device=device)
    res = run(sel, opts, obj["store"])
    computed = sum(r.computed for r in res.results)
    emit(res.render(fmt), out, f"lm-eval: {computed} task result(s) computed, {len(res.results) - computed} read "
         f"from the store ({obj['store']})" if fmt == "table" else None)

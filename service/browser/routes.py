"""The browser's routes (an ``APIRouter``): each page reads its panels through :class:`~.queries.Reader`."""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from negdb.errors import BadArgument, NegdbError, QueryTimeout
from negdb.service.browser import TEMPLATES, charts
from negdb.service.browser.queries import Panel, Reader, clean
from negdb.service.state import ServiceState

PER_PAGE = 50
INLINE_TRAJECTORY_MAX = 16
"""A neuron page reads its w_dist trajectory inline up to this many stored checkpoints; beyond, the panel is
fetched after the page has loaded (htmx; a link without JavaScript), as it reads every checkpoint's segment."""
MAX_PER_PAGE = 500
SQL_PAGE_ROWS = 1000


class PageNotFound(Exception):
    """An unknown model, checkpoint, neuron, set, result or analysis: a 404 page."""


def listed(head: Panel, what: str) -> Panel:
    """``head`` (a page's head row), or the 404 page saying there is no ``what`` when it has no rows."""
    if not head.rows:
        raise PageNotFound(f"no {what} (/browse lists them)")
    return head


def neuron_url(model: str, revision: str, layer: int, neuron: int) -> str:
    return f"/m/{quote(str(model), safe='')}/{quote(str(revision), safe='')}/{int(layer)}/{int(neuron)}"


def sql_url(sql: str) -> str:
    return "/browse/sql?" + urlencode({"q": sql})


def num(v: Any, digits: int = 4) -> str:
    """A compact number: integers as is (thousands separated), floats to ``digits`` significant digits."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def context_parts(text: str | None) -> tuple[str, str, str]:
    """A token context ``...before [[token]] after...`` split for highlighting the token."""
    if not text:
        return "", "", ""
    a, _, rest = text.partition("[[")
    tok, _, b = rest.partition("]]")
    return a, tok, b


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(neuron_url=neuron_url, sql_url=sql_url, quote=quote, num=num,
                                 context_parts=context_parts)
    templates.env.filters["num"] = num
    templates.env.filters["pretty"] = lambda s: json.dumps(json.loads(s), indent=1) if isinstance(s, str) else s
    return templates


def warm(templates: Jinja2Templates) -> None:
    """Do before the first request what the first page loads would each do once (about 0.3 s on the build
    machine for the first neuron page, 0.25 s for the first search): compile every template, import the array
    reader of the neuron page, and check a search filter (the checker's parser and schema database are made on
    first use)."""
    from negdb.store.safety import check_where

    for name in templates.env.list_templates():
        templates.env.get_template(name)
    importlib.import_module("zarr")

    for view in ("neurons", "neuron_stats"):
        check_where("layer = 0", view=view)


def make_router(state: ServiceState) -> APIRouter:
    """The browser's pages over the service's state (its live catalog, limits and ``allow_writes``); its
    ``warm()`` prepares the templates (the service's start calls it)."""
    router = APIRouter(include_in_schema=False)
    templates = make_templates()
    router.warm = lambda: warm(templates)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def reader(request: Request | None = None) -> Iterator[Reader]:
        with state.live.use() as snap:
            r = Reader(snap, timeout_s=state.timeout_s, max_rows=state.max_rows, slots=state.slots)
            try:
                yield r
            finally:
                if request is not None:
                    request.scope["negdb_db_ms"] = request.scope.get("negdb_db_ms", 0.0) + r.db_ms

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """The page, with ``Server-Timing``: ``app`` (whole handler), ``db`` (queries), ``render`` (template)."""
        start = request.scope.get("negdb_start", time.perf_counter())
        t0 = time.perf_counter()
        resp = templates.TemplateResponse(request, name, {"allow_writes": state.allow_writes, **ctx},
                                          status_code=status)
        end = time.perf_counter()
        resp.headers["Server-Timing"] = (f"app;dur={(end - start) * 1000:.1f}, "
                                         f"db;dur={request.scope.get('negdb_db_ms', 0.0):.1f}, "
                                         f"render;dur={(end - t0) * 1000:.1f}")
        return resp

    def page(fn: Callable[..., Response]) -> Callable[..., Response]:
        """Render NegdbError as a 400 page and PageNotFound as a 404 page (HTML, not the API's JSON)."""
        import functools

        @functools.wraps(fn)
        def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
            request.scope["negdb_start"] = time.perf_counter()
            try:
                return fn(request, *args, **kwargs)
            except PageNotFound as err:
                return render(request, "error.html", 404, title="Not found", message=str(err))
            except NegdbError as err:
                status = 408 if isinstance(err, QueryTimeout) else 400
                return render(request, "error.html", status, title="Refused", message=str(err))
        return wrapped

    # ------------------------------------------------------------------------------------------ home

    def home(request: Request, model: str | None = None, checkpoint: str | None = None) -> Response:
        with reader(request) as r:
            models = r.models()
            counts = r.counts()
            chosen = model or (models.rows[0]["model_id"] if models.rows else None)
            layers = ckpts = None
            revisions: list[str] = []
            chart = None
            if chosen is not None:
                if chosen not in {m["model_id"] for m in models.rows}:
                    raise PageNotFound(f"unknown model {chosen!r}")
                ckpts = r.checkpoints(chosen)
                revisions = r.stat_checkpoints(chosen) or [c["revision"] for c in ckpts.rows]
                checkpoint = checkpoint or (revisions[-1] if revisions else None)
                if checkpoint is not None:
                    layers = r.layer_w_dist(chosen, checkpoint)
                    chart = charts.grouped(
                        [{"layer": row["layer"], "stat": k, "v": row[k]} for row in layers.rows
                         for k in ("p50", "p90", "p99", "max", "mean")],
                        "layer", "v", lambda x: x["stat"], xlabel="layer", ylabel="w_dist")
        return render(request, "home.html", models=models, counts=counts, model=chosen, checkpoint=checkpoint,
                      revisions=revisions, ckpts=ckpts, layers=layers, chart=chart)

    router.add_api_route("/ui", page(home), methods=["GET"], response_class=HTMLResponse)
    router.home = page(home)  # type: ignore[attr-defined]  # the service's "/" for browsers

    # ------------------------------------------------------------------------------------------ search

    @router.get("/search", response_class=HTMLResponse)
    @page
    def search(request: Request, model: str | None = None, checkpoint: str | None = None, where: str | None = None,
               order: str = "w_dist", dir: str = "desc", page_no: int = Query(1, alias="page", ge=1),
               per: int = Query(PER_PAGE, ge=1, le=MAX_PER_PAGE), part: str | None = None) -> Response:
        """Search ``neurons``: one top-N statement for the page's rows; the count of all matches with it on one
        checkpoint, and over every checkpoint (a second full scan) fetched after the page has loaded (htmx: ``part=
        count``; without JavaScript a link renders the page with the count)."""
        with reader(request) as r:
            models = r.models()
            if not models.rows:
                return render(request, "search.html", models=models, model=None, rows=None, error=None,
                              form={}, revisions=[], columns=[])
            model = model or models.rows[0]["model_id"]
            if model not in {m["model_id"] for m in models.rows}:
                raise PageNotFound(f"unknown model {model!r}")
            revisions = r.stat_checkpoints(model)
            if checkpoint is None:
                checkpoint = revisions[-1] if revisions else None
            elif checkpoint in ("", "*"):
                checkpoint = None
            per = max(1, min(int(per), MAX_PER_PAGE))
            page_no = max(1, page_no)
            where = (where or "").strip() or None
            form = {"model": model, "checkpoint": checkpoint or "*", "where": where or "", "order": order,
                    "dir": dir, "per": per}
            count_url = "/search?" + urlencode({**form, "part": "count"})
            error = None
            status = 200
            rows = count = None
            alone = part == "count" and bool(request.headers.get("hx-request"))  # the lazily fetched count alone
            try:
                plan = r.plan_search(model, checkpoint, where, order, dir != "asc")
                if not alone:
                    rows = r.panel(plan.rows_sql(per, (page_no - 1) * per), plan.params, limit=per + 1)
                if checkpoint or part == "count":
                    count = r.panel(plan.count_sql(), plan.params, limit=1)
            except NegdbError as err:
                if alone:
                    raise
                error = str(err)
                status = 408 if isinstance(err, QueryTimeout) else 400
            more = rows is not None and len(rows.rows) > per
            if rows is not None:
                rows.rows = rows.rows[:per]

            def link(p: int) -> str:
                return "/search?" + urlencode({**form, "page": p})
        if alone:
            return render(request, "_count.html", count=count, total=count.rows[0]["n"])
        return render(request, "search.html", status=status, models=models, model=model,
                      revisions=revisions, columns=[c for c, _ in r.columns()], form=form, rows=rows, count=count,
                      total=count.rows[0]["n"] if count is not None else None, count_url=count_url,
                      error=error, page=page_no, prev_url=link(page_no - 1) if page_no > 1 else None,
                      next_url=link(page_no + 1) if more else None)

    @router.post("/search/save", response_class=HTMLResponse)
    async def search_save(request: Request) -> Response:
        """Save the search's filter as a neuron set (a form post: name, model, checkpoint, where)."""
        from urllib.parse import parse_qs

        from starlette.concurrency import run_in_threadpool

        body = parse_qs((await request.body()).decode("utf-8", "replace"))
        form = {k: v[0] for k, v in body.items() if v}
        return await run_in_threadpool(page(save_set), request, form)

    def save_set(request: Request, form: dict[str, str]) -> Response:
        if not state.allow_writes:
            return render(request, "error.html", 403, title="Read-only",
                          message="this service is read-only: start it with `negdb serve --allow-writes` to save "
                                  "neuron sets from the browser")
        from negdb.query import sets

        name, model = form.get("name", "").strip(), form.get("model", "").strip()
        checkpoint, where = form.get("checkpoint", "*"), form.get("where", "").strip()
        if not name or not model:
            raise BadArgument("give the set a name (and the model to pick from)")
        if not where:
            raise BadArgument("give a filter to save: a set holds the neurons the filter matches")
        with state.live.use() as snap, snap.lock:
            sel = sets.select(snap.catalog, model, None if checkpoint in ("", "*") else checkpoint, where=where)
            if sel.n_members == 0:
                raise BadArgument("the filter matches no neurons: nothing to save")
            saved = sets.save(snap.catalog.layout, sel, name)
        state.live.maybe_refresh(force=True)
        return RedirectResponse(f"/browse/set/{quote(saved.name, safe='')}", status_code=303)

    # ------------------------------------------------------------------------------------------ one neuron

    def neuron_values(r: Reader, keys: Any, layer: int, index: int, stats: dict[str, Any],
                      notes: list[str]) -> tuple[Panel, dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
        """The layer's stored activations row, the neuron's histogram and its token contexts (None, {} if none)."""
        import numpy as np
        import zarr

        from negdb.query import neuron as neuron_lib

        arr = r.array_row(keys.model_id, keys.revision, keys.slice_id, layer)
        path = r.catalog.layout.root / arr.rows[0]["array_path"] if arr.rows else None
        if path is None or not path.exists():
            notes.append(f"the activations of layer {layer} were not kept, so there is no histogram and no token "
                         "contexts (re-ingest with --activations all)")
            return arr, None, {}
        t0 = time.perf_counter()
        x = np.asarray(zarr.open_array(str(path), mode="r")[:, index])
        hist = neuron_lib.histogram(x, stats["mean"], stats["std"], 60).to_dict()
        tok = None
        try:
            with r.snap.lock:
                tok = neuron_lib.slice_tokenizer(r.catalog, keys)
        except Exception as err:  # noqa: BLE001 - only the decoded text is lost
            notes.append(f"the tokenizer could not be loaded ({err}); contexts show token ids")
        contexts = {kind: [c.to_dict() for c in cs]
                    for kind, cs in neuron_lib.token_contexts(x, path.parent.parent, tok, 6, 10).items()}
        r.db_ms += (time.perf_counter() - t0) * 1000
        return arr, hist, contexts

    @router.get("/m/{path:path}", response_class=HTMLResponse)
    @page
    def neuron_page(request: Request, path: str) -> Response:
        from negdb.query import sets as setlib

        parts = path.rsplit("/", 3)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise PageNotFound("use /m/{model}/{checkpoint}/{layer}/{neuron}, e.g. /m/pythia-70m/step1000/3/17")
        model, checkpoint, layer_s, neuron_s = parts
        if not (layer_s.isdigit() and neuron_s.isdigit()):
            raise PageNotFound(f"layer and neuron must be whole numbers (got {layer_s!r} and {neuron_s!r})")
        layer, index = int(layer_s), int(neuron_s)
        notes: list[str] = []
        with reader(request) as r:
            known = {m["model_id"]: m for m in r.models().rows}
            if model not in known:
                raise PageNotFound(f"unknown model {model!r}")
            info = known[model]

            def keys_of() -> Any:
                with r.snap.lock:
                    return setlib.resolve_keys(r.catalog, model, checkpoint)
            try:
                k = r.memo(f"keys {model!r} {checkpoint!r}", keys_of)
            except NegdbError as err:
                raise PageNotFound(str(err)) from None
            want_traj = request.query_params.get("part") == "trajectory"
            if want_traj and request.headers.get("hx-request"):  # the lazily loaded panel alone
                traj = r.trajectory(model, layer, index, k.slice_id, k.spec_id)
                return render(request, "_trajectory.html", model=model, revision=k.revision, layer=layer,
                              neuron=index, traj=traj, traj_chart=trajectory_chart(traj))
            n_ckpts = len(r.stat_checkpoints(model))
            stats = r.neuron_row(model, k.revision, layer, index, k.slice_id, k.spec_id)
            if not stats.rows:
                raise PageNotFound(f"no statistics for neuron {index} of layer {layer} of {model}@{k.revision} "
                                   f"(the model has {info.get('n_layers')} layers of {info.get('d_mlp')} neurons)")
            arr, hist, contexts = neuron_values(r, k, layer, index, stats.rows[0], notes)
            traj = (r.trajectory(model, layer, index, k.slice_id, k.spec_id)
                    if want_traj or n_ckpts <= INLINE_TRAJECTORY_MAX else None)
            pairs = r.diff_pairs(model, k.revision, layer, index)
            top = r.layer_top(model, k.revision, layer)
            in_sets = r.neuron_sets_of(model, k.revision, layer, index)
        n_layers, d_mlp = info.get("n_layers") or layer + 1, info.get("d_mlp") or index + 1
        near = {"prev": neuron_url(model, k.revision, layer, index - 1) if index > 0 else None,
                "next": neuron_url(model, k.revision, layer, index + 1) if index + 1 < d_mlp else None,
                "up": neuron_url(model, k.revision, layer - 1, index) if layer > 0 else None,
                "down": neuron_url(model, k.revision, layer + 1, index) if layer + 1 < n_layers else None}
        return render(request, "neuron.html", model=model, revision=k.revision, layer=layer, neuron=index,
                      keys=k._asdict(), stats=stats, hist=hist, hist_chart=charts.histogram(hist) if hist else None,
                      acts_sql=arr.sql, traj=traj, traj_chart=trajectory_chart(traj) if traj else None,
                      traj_url=neuron_url(model, k.revision, layer, index) + "?part=trajectory",
                      n_checkpoints=n_ckpts, contexts=contexts, pairs=pairs, top=top, in_sets=in_sets, near=near,
                      notes=notes)

    # ------------------------------------------------------------------------------------------ sets and results

    @router.get("/browse", response_class=HTMLResponse)
    @page
    def browse(request: Request) -> Response:
        with reader(request) as r:
            sets_p, ablations, analyses, results = r.sets(), r.ablations(), r.analyses(), r.results(limit=300)
            lm_pairs = r.lm_eval_pairs()
        lm_chart = None
        if lm_pairs.rows:
            rows = [{"task": f"{p['benchmark'].removeprefix('lm-eval:')} ({p['set_name'] or p['mode']})",
                     "cond": c, "v": p[c]} for p in lm_pairs.rows for c in ("baseline", "ablated")]
            lm_chart = charts.grouped(rows, "task", "v", lambda x: x["cond"], categorical=True, xlabel="lm-eval task",
                                      ylabel="primary metric")
        return render(request, "browse.html", sets=sets_p, ablations=ablations, analyses=analyses, results=results,
                      lm_pairs=lm_pairs, lm_chart=lm_chart)

    @router.get("/browse/set/{name}", response_class=HTMLResponse)
    @page
    def set_page(request: Request, name: str) -> Response:
        with reader(request) as r:
            head = listed(r.set_row(name), f"neuron set named {name!r}")
            row = head.rows[0]
            members = r.set_members(row["set_id"])
            results = r.results(set_id=row["set_id"])
        counts = json.loads(row["counts_json"]) if row.get("counts_json") else {}
        chart = charts.spec("bars", list(range(len(counts))), [charts.series("members", list(counts.values()))],
                            xlabels=list(counts), xlabel="layer", ylabel="neurons") if counts else None
        return render(request, "set.html", row=row, head=head, members=members, results=results, chart=chart,
                      counts=counts)

    @router.get("/browse/result/{result_id}", response_class=HTMLResponse)
    @page
    def result_page(request: Request, result_id: str) -> Response:
        from negdb.evals.metrics import paired_bootstrap

        with reader(request) as r:
            head = listed(r.result_row(result_id), f"stored evaluation {result_id!r}")
            row = head.rows[0]
            metrics = r.result_metrics(result_id)
            base_id = None
            if row["mode"] != "none":
                b = r.baseline_of(row)
                base_id = b.rows[0]["result_id"] if b.rows else None
            delta = None
            if base_id is not None:
                a, bi = r.items(result_id), r.items(base_id)
                if (len(a.rows) == len(bi.rows) and a.rows and all(x["correct"] is not None for x in a.rows)
                        and all(x["correct"] is not None for x in bi.rows)):
                    d, lo, hi = paired_bootstrap([float(x["correct"]) for x in a.rows],
                                                 [float(x["correct"]) for x in bi.rows])
                    delta = {"delta": d, "lo": lo, "hi": hi, "n": len(a.rows)}
            base_metrics = r.result_metrics(base_id) if base_id else None
        primary = row["primary_metric"]
        group_rows = [m for m in metrics.rows if m["metric"] == primary and m["grp"] is not None]
        chart = None
        if group_rows:
            rows = [{"grp": m["grp"], "c": "this evaluation", "v": m["value"]} for m in group_rows]
            if base_metrics is not None:
                rows += [{"grp": m["grp"], "c": "baseline", "v": m["value"]} for m in base_metrics.rows
                         if m["metric"] == primary and m["grp"] is not None]
            chart = charts.grouped(rows, "grp", "v", lambda x: x["c"], categorical=True, xlabel=group_rows[0]["level"],
                                   ylabel=primary)
        return render(request, "result.html", row=row, head=head, metrics=metrics, chart=chart, base_id=base_id,
                      delta=delta, scoring=row.get("scoring_json"))

    @router.get("/browse/ablation/{ablation_id}", response_class=HTMLResponse)
    @page
    def ablation_page(request: Request, ablation_id: str) -> Response:
        from negdb.ablate.stored import stored_comparison

        with reader(request) as r:
            head = listed(r.panel("SELECT * EXCLUDE (config_json) FROM ablations WHERE ablation_id = ? ORDER BY "
                                  "condition, seed", [ablation_id]), f"stored ablation {ablation_id!r}")
            config = r.panel("SELECT config_json FROM ablations WHERE ablation_id = ? LIMIT 1", [ablation_id])
            with r.snap.lock:
                cmp = stored_comparison(r.catalog, ablation_id)
        rows = add_keys([clean(x) for x in cmp.to_records()])
        return render(request, "ablation.html", ablation_id=ablation_id, head=head, rows=rows,
                      charts=charts.ablation(rows),
                      config=config.rows[0]["config_json"], conditions=cmp.conditions)

    @router.get("/browse/analysis/{analysis_id}", response_class=HTMLResponse)
    @page
    def analysis_page(request: Request, analysis_id: str) -> Response:
        from negdb.store.tables import ANALYSIS_TABLES

        with reader(request) as r:
            head = listed(r.analysis_row(analysis_id), f"stored analysis {analysis_id!r}")
            tables: list[tuple[str, Panel, dict[str, Any] | None]] = []
            for t in ANALYSIS_TABLES:
                p = r.analysis_table(t.name, analysis_id)
                if p.rows:
                    make = charts.ANALYSIS_CHARTS.get(t.name)
                    tables.append((t.name, p, make(p.rows) if make else None))
        return render(request, "analysis.html", row=head.rows[0], head=head, tables=tables)

    @router.get("/browse/sql", response_class=HTMLResponse)
    @page
    def sql_page(request: Request, q: str = "") -> Response:
        result = error = None
        if q.strip():
            try:
                with reader(request) as r:
                    result = r.panel(q, limit=min(SQL_PAGE_ROWS, state.max_rows))
            except NegdbError as err:
                error = str(err)
        return render(request, "sql.html", 400 if error else 200, q=q, result=result, error=error)

    return router


def trajectory_chart(traj: Panel) -> dict[str, Any] | None:
    """w_dist and its negative/positive parts over training steps (None with fewer than two checkpoints)."""
    if len(traj.rows) < 2:
        return None
    return charts.grouped([{"x": row["step"] if row["step"] is not None else i, "s": s, "v": row[s]}
                           for i, row in enumerate(traj.rows) for s in ("w_dist", "w_dist_neg", "w_dist_pos")],
                          "x", "v", lambda x: x["s"], xlabel="training step", ylabel="w_dist")


def add_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Comparison rows with ``key`` = "benchmark metric" (the x of the ablation chart)."""
    return [{**r, "key": f"{r['benchmark']} {r['metric']}"} for r in rows]

"""The live neuron browser of ``negdb serve``: server-rendered pages over the service's shared catalog snapshot.

Pages (Jinja2 templates in ``templates/``; charts drawn with the vendored uPlot, ``static/vendor/``):

- ``/`` (for a browser; API clients still get the JSON index): models, checkpoints, counts, w_dist per layer;
- ``/search``: a ``--where``-style filter and sort over ``neurons``, paged, each row linking to its neuron;
  ``POST /search/save`` saves the filter as a neuron set, only when the service runs with ``--allow-writes``;
- ``/m/{model}/{checkpoint}/{layer}/{neuron}``: one neuron (statistics, histogram against the fitted Gaussian,
  w_dist across checkpoints, token contexts, differentiating pairs, sets, neighbours);
- ``/browse``: sets and results; ``/browse/set/{name}``, ``/browse/result/{id}``, ``/browse/ablation/{id}``,
  ``/browse/analysis/{id}``: one of them, charted with their CIs; ``/browse/sql?q=``: run one statement.

Every query goes through ``Catalog.query`` (the service's walls and limits); each panel links to its SQL.
Without JavaScript every chart is also a plain table. See docs/SERVICE.md.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

from negdb.service.browser.routes import make_router  # noqa: E402

__all__ = ["STATIC", "TEMPLATES", "make_router"]

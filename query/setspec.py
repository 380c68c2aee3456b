"""Which neurons a command ablates, as one typed value: :class:`SetSpec`.

A ``SetSpec`` names a model (and checkpoint) and exactly one way to pick its neurons: a SQL ``where`` expression
over the ``neurons`` view, a saved set by name, or the ``top`` ``k`` per layer by a statistic; ``layers``
restricts any of them. It validates itself on construction (:class:`negdb.errors.BadArgument`); picking the
neurons needs the catalog (:func:`negdb.ablate.conditions.main_set`).

``top`` is a fraction of each layer's width (``0.01`` = 1%, a float in (0, 1]) or a count (an int >= 1);
``layers`` a list of layer indices (negative ones count from the end).
"""

from __future__ import annotations

from dataclasses import dataclass

from negdb.errors import BadArgument
from negdb.values import k_text, layer_list, layers_text, top_k

__all__ = ["SetSpec", "k_text", "layer_list", "layers_text", "top_k"]


@dataclass(frozen=True)
class SetSpec:
    """The neurons to ablate: one of ``where``, ``set_name`` and ``top`` (with ``by``), optionally restricted to
    ``layers``, on the statistics of ``model`` at ``checkpoint`` (default: the latest ingest).

    Attributes:
        model: a stored model key, or anything ``negdb ingest --model`` accepts.
        checkpoint: the checkpoint to evaluate (default: the one the set's statistics come from).
        where: a boolean SQL expression over the ``neurons`` view (``"w_dist > 0.9"``).
        set_name: a saved set (``negdb sets``).
        top: per layer, the ``top`` highest ``by``: a fraction (0.01) or a count (5).
        by: the statistic column ranked by ``top``.
        layers: restrict the set to these layers.
    """

    model: str
    checkpoint: str | None = None
    where: str | None = None
    set_name: str | None = None
    top: float | int | None = None
    by: str = "w_dist"
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise BadArgument("model is required: a stored model key, alias, folder or hub id")
        given = [n for n, v in (("where", self.where), ("set", self.set_name), ("top", self.top)) if v is not None]
        if len(given) != 1:
            raise BadArgument("choose the neurons with exactly one of --where EXPR, --set NAME or --top K "
                              f"(got {', '.join('--' + g for g in given) or 'none'})")
        if self.where is not None and (not isinstance(self.where, str) or not self.where.strip()):
            raise BadArgument("--where is empty: give a boolean expression like 'w_dist > 0.5'")
        if self.top is not None:
            object.__setattr__(self, "top", top_k(self.top))
            from negdb.query.sets import stat_columns

            if self.by not in stat_columns():
                raise BadArgument(f"--by {self.by}: not a statistic column; use one of {', '.join(stat_columns())}")
        object.__setattr__(self, "layers", layer_list(self.layers))

    def describe(self) -> str:
        """A short label (``top 1% by w_dist``, ``set wass1``, ``where w_dist > 0.9``), with the layers."""
        what = (f"top {k_text(self.top)} by {self.by}" if self.top is not None
                else f"set {self.set_name}" if self.set_name is not None else f"where {self.where}")
        return what + ("" if self.layers is None else f" in layers {','.join(map(str, self.layers))}")

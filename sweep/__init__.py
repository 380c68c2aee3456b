"""Dose-response and robustness sweeps of sign-specific ablations (``negdb sweep``).

``negdb.sweep.run(SweepOptions(...), store) -> Sweep`` runs (or reads back) a grid; ``plan`` gives its work
estimate only. Modules: :mod:`~negdb.sweep.grid` (options, points, sets), :mod:`~negdb.sweep.estimate`,
:mod:`~negdb.sweep.runner`, :mod:`~negdb.sweep.contrasts` (the statistics), :mod:`~negdb.sweep.render`.
"""

from __future__ import annotations

from negdb.sweep.grid import GridPoint, SweepOptions
from negdb.sweep.runner import Sweep, plan, run

__all__ = ["GridPoint", "Sweep", "SweepOptions", "plan", "run"]

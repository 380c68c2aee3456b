"""Dose-response and robustness sweeps of sign-specific ablations (``negdb sweep``).

``negdb.sweep.run(SweepSpec(...), store) -> Sweep`` runs (or reads back) a grid; ``plan`` gives its work
estimate only. Modules: :mod:`~negdb.sweep.grid` (the spec, points, sets), :mod:`~negdb.sweep.estimate`,
:mod:`~negdb.sweep.runner`, :mod:`~negdb.sweep.contrasts` (the statistics), :mod:`~negdb.sweep.render`.
"""

from __future__ import annotations

from negdb.sweep.grid import Direction, GridPoint, SweepSpec
from negdb.sweep.runner import Sweep, plan, run

__all__ = ["Direction", "GridPoint", "Sweep", "SweepSpec", "plan", "run"]

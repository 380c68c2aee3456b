"""The HTML report drawn only from stored results (``negdb report``).

- :mod:`negdb.report.data`: stored results read into frames (the one place that names catalog columns).
- :mod:`negdb.report.figures`: one matplotlib (Agg) function per figure.
- :mod:`negdb.report.sweep_figures`: the figures, captions and tables of a stored sweep.
- :mod:`negdb.report.captions`: caption sentences (model, checkpoints, data, scoring conventions).
- :mod:`negdb.report.sections`: one model's blocks: figure, caption and tables, or a note naming the command.
- :mod:`negdb.report.page`: the self-contained HTML page.
- :mod:`negdb.report.build`: :func:`build`, the whole report written atomically.
"""

from negdb.report.build import Report, build

__all__ = ["Report", "build"]

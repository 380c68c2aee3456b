"""negdb.stats: per-neuron statistics of MLP pre-activations as pure numpy functions.

- ``compute.block_stats``: every statistic except ``md`` / ``w_pct`` for an ``(n_tokens, k)`` block (one sort).
- ``wasserstein``: exact W1 to N(0, 1) with its negative / positive split; the seeded sample variant.
- ``moments``: moments, quantiles, sign statistics from sorted rows.
- ``mapping``: ``draw_pairs``, ``input_distances``, ``mapping_difficulty``, ``percentile_rank``.
- ``schema.NEURON_STATS``: column names, Arrow types and one-line meanings.
"""

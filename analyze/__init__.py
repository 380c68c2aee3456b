"""The paper's analyses beyond the main ablation, each stored in the catalog (``negdb analyze``).

- :mod:`negdb.analyze.pos`: excess surprisal of an ablation per part-of-speech tag (WikiText-2 test, spaCy UPOS).
- :mod:`negdb.analyze.layers`: a set ablated one layer group at a time and cumulatively.
- :mod:`negdb.analyze.training`: w_dist, the top-1% cohort and the ablation effect across training checkpoints.
- :mod:`negdb.analyze.pairs`: token pairs that one neuron differentiates with negative values; negative share.
- :mod:`negdb.analyze.record`: keys and storage of an analysis (shared by all of the above).
"""

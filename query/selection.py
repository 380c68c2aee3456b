"""What a selection of neurons is: the statistics it refers to (:class:`Keys`), its members and their hash.

Picking neurons is :mod:`negdb.query.sets`; storing a selection under a name is :mod:`negdb.query.setstore`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

import polars as pl

__all__ = ["Keys", "Selection", "content_hash"]


class Keys(NamedTuple):
    """The statistics a selection refers to."""

    model_id: str
    revision: str
    slice_id: str
    spec_id: str


@dataclass(frozen=True)
class Selection:
    """Neurons picked from one set of statistics (not stored until :func:`negdb.query.setstore.save`).

    Attributes:
        keys: the statistics (model_id, revision, slice_id, spec_id).
        expression: canonical JSON of the picker (sorted keys; the seed is part of it for random pickers).
        members: polars frame ``(layer, neuron)`` (int32), sorted.
        counts: members per layer, for every layer the picker considered (zeros included).
        content_hash: SHA-256 over the keys and the sorted members: the same members of the same statistics
            give the same hash, whatever picked them.
    """

    keys: Keys
    expression: str
    members: pl.DataFrame
    counts: dict[int, int]
    content_hash: str

    @property
    def n_members(self) -> int:
        return self.members.height


def content_hash(keys: Keys, members: pl.DataFrame) -> str:
    """SHA-256 over the statistics keys and the sorted (layer, neuron) members."""
    rows = sorted((int(layer), int(neuron)) for layer, neuron in members.select("layer", "neuron").iter_rows())
    blob = json.dumps({"keys": list(keys), "members": rows}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()

"""Saved neuron sets: immutable storage of a :class:`~negdb.query.sets.Selection` under a name.

One ``neuron_sets`` segment per name (first writer wins) and one ``neuron_set_members`` segment per content
hash, members first, so a visible set always has its members.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from negdb.errors import BadArgument, NotFound, StoreConflict, StoreDamaged, preview
from negdb.query.selection import Keys, Selection, content_hash
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.tables import NEURON_SET_MEMBERS, NEURON_SETS

__all__ = ["NeuronSet", "check_name", "get", "list_sets", "save"]


@dataclass(frozen=True)
class NeuronSet:
    """A saved, immutable neuron set.

    ``new`` is True only on the object :func:`save` returns when that call stored the set.
    """

    name: str
    set_id: str
    keys: Keys
    expression: str
    counts: dict[int, int]
    n_members: int
    created_at: datetime | None
    members: pl.DataFrame = field(repr=False)
    new: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (members as ``[[layer, neuron], ...]``)."""
        return {"name": self.name, "set_id": self.set_id, **self.keys._asdict(),
                "expression": json.loads(self.expression), "counts": {str(k): v for k, v in self.counts.items()},
                "n_members": self.n_members,
                "created_at": self.created_at.isoformat() if self.created_at is not None else None,
                "members": self.members.rows()}





NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise BadArgument(f"bad set name '{name}': use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def _name_segment(name: str) -> str:
    # hashed: names differing only in case stay distinct on case-insensitive file systems, '.x' is not hidden
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _layout(layout_or_store: StoreLayout | Catalog | str | Path) -> StoreLayout:
    if isinstance(layout_or_store, StoreLayout):
        return layout_or_store
    if isinstance(layout_or_store, Catalog):
        return layout_or_store.layout
    return StoreLayout.at(layout_or_store)


def _from_row(row: dict[str, Any], members: pl.DataFrame, new: bool = False) -> NeuronSet:
    return NeuronSet(name=row["name"], set_id=row["set_id"],
                     keys=Keys(row["model_id"], row["revision"], row["slice_id"], row["spec_id"]),
                     expression=row["expression"],
                     counts={int(k): int(v) for k, v in json.loads(row["counts_json"]).items()},
                     n_members=int(row["n_members"]), created_at=row["created_at"], members=members, new=new)


def _stored(layout: StoreLayout, name: str) -> dict[str, Any] | None:
    """The stored ``neuron_sets`` row of ``name`` (``None``: no set of that name)."""
    found = layout.read_segment(NEURON_SETS.name, _name_segment(name))
    return None if found is None else found.to_pylist()[0]


def _check_same(stored: dict[str, Any], name: str, set_id: str) -> dict[str, Any]:
    """``stored`` (the row of ``name``); NegdbError when it holds other members than ``set_id``."""
    if stored["set_id"] != set_id:
        raise StoreConflict(f"a neuron set named '{name}' already exists with other members (set "
                         f"{stored['set_id'][:12]}, {stored['n_members']} neurons): sets are immutable, "
                         "pick a new name")
    return stored


def save(layout_or_store: StoreLayout | Catalog | str | Path, selection: Selection, name: str) -> NeuronSet:
    """Store ``selection`` as the immutable set ``name``.

    The members segment is written first (keyed by the content hash), then the name's segment (first writer
    wins), so a visible set always has its members (a writer that loses a race for the name to other members
    leaves only an unreferenced, content-addressed members segment). The same name with the same hash is a no-op; with
    another hash it is refused. Pass the ``Catalog`` to have it refreshed afterwards.
    """
    check_name(name)
    layout = _layout(layout_or_store).init()
    members = selection.members.select(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32))
    if content_hash(selection.keys, members) != selection.content_hash:
        raise BadArgument("the selection's members do not match its content hash: select again")
    if members.height == 0:
        raise BadArgument(f"the selection is empty: nothing to save as '{name}'")
    set_id = selection.content_hash
    before = _stored(layout, name)
    if before is not None:
        _check_same(before, name, set_id)
    member_table = pa.table({"set_id": pa.array([set_id] * members.height, pa.string()),
                             "layer": members["layer"].to_arrow(), "neuron": members["neuron"].to_arrow()},
                            schema=NEURON_SET_MEMBERS.schema)
    if before is None and not layout.has_segment(NEURON_SET_MEMBERS.name, set_id):
        layout.put_segment(NEURON_SET_MEMBERS.name, set_id, member_table)
    row = {"name": name, "set_id": set_id, **selection.keys._asdict(), "expression": selection.expression,
           "counts_json": json.dumps({str(k): v for k, v in sorted(selection.counts.items())}),
           "n_members": members.height, "created_at": datetime.now(timezone.utc)}
    new = before is None and layout.put_segment(NEURON_SETS.name, _name_segment(name), NEURON_SETS.from_rows([row]))
    if not new:  # stored before, or by a concurrent writer that won the race
        stored = before if before is not None else _stored(layout, name)
        assert stored is not None  # the name's segment exists: it kept this call from writing
        row = _check_same(stored, name, set_id)
    if isinstance(layout_or_store, Catalog):
        layout_or_store.refresh()
    return _from_row(row, members.sort("layer", "neuron"), new=new)


_SETS_SQL = """
SELECT name, set_id, model_id, revision, slice_id, spec_id, n_members, counts_json, expression, created_at
FROM neuron_sets
"""


def list_sets(cat: Catalog) -> pl.DataFrame:
    """Every saved set (without members), oldest first."""
    return cat.sql(_SETS_SQL + " ORDER BY created_at, name")


def get(cat: Catalog, name: str) -> NeuronSet:
    """The saved set ``name`` with its members."""
    check_name(name)
    rows = cat.arrow(_SETS_SQL + " WHERE name = ? ORDER BY created_at LIMIT 1", [name]).to_pylist()
    if not rows:
        names = cat.arrow("SELECT name FROM neuron_sets ORDER BY name").column("name").to_pylist()
        raise NotFound(f"no neuron set named '{name}' in {cat.layout.location}: stored sets are {preview(names)} "
                         "(`negdb sets` lists them)")
    row = rows[0]
    members = cat.sql("SELECT DISTINCT layer, neuron FROM neuron_set_members WHERE set_id = ? "
                      "ORDER BY layer, neuron", [row["set_id"]])
    members = members.with_columns(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32))
    if members.height != row["n_members"]:
        raise StoreDamaged(f"neuron set '{name}' lists {row['n_members']} members but {members.height} are stored: "
                         "the store is damaged")
    return _from_row(row, members)


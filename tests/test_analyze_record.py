"""Stored analyses: keys, first-writer-wins publication, and read-back through SQL and the query service."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import negdb
from negdb.analyze import record
from negdb.service.app import create_app
from negdb.store.layout import StoreLayout
from negdb.store.tables import NEG_SHARE, POS_SURPRISAL


def _store(tmp_path: Path) -> StoreLayout:
    return StoreLayout(tmp_path / "store").init()


def test_key_depends_on_kind_and_every_argument() -> None:
    a = record.analysis_id("pos", {"x": 1, "y": [1, 2]})
    assert a == record.analysis_id("pos", {"y": [1, 2], "x": 1})  # key order does not matter
    assert a != record.analysis_id("layers", {"x": 1, "y": [1, 2]})
    assert a != record.analysis_id("pos", {"x": 2, "y": [1, 2]})
    assert len(a) == 16


def test_publish_writes_details_then_row_and_first_writer_wins(tmp_path: Path) -> None:
    layout = _store(tmp_path)
    aid = record.analysis_id("pos", {"k": 1})
    assert record.lookup(layout, aid) is None
    rows = [{"condition": "ablation", "tag": "DET", "n_tokens": 3, "excess": 0.5},
            {"condition": "ablation", "tag": "NOUN", "n_tokens": 2, "excess": -0.1}]
    row = record.publish(layout, aid, kind="pos", model_id="m", revision="final", config={"k": 1},
                         summary={"n": 2}, seconds=1.5, tables={POS_SURPRISAL: rows, NEG_SHARE: []})
    assert row["analysis_id"] == aid and row["kind"] == "pos"
    assert not (layout.table_dir("neg_share") / f"{aid}.parquet").exists()  # no rows, no segment
    again = record.publish(layout, aid, kind="pos", model_id="m", revision="final", config={"k": 1},
                           summary={"n": 999}, seconds=9.0, tables={POS_SURPRISAL: rows[:1]})
    assert again["summary_json"] == row["summary_json"]  # the first one stays
    with negdb.connect(str(layout.root)) as cat:
        got = cat.sql("SELECT tag, n_tokens, excess FROM pos_surprisal WHERE analysis_id = ? ORDER BY tag", [aid])
        assert got.rows() == [("DET", 3, 0.5), ("NOUN", 2, -0.1)]
        assert cat.sql("SELECT count(*) FROM analyses").item() == 1
    with TestClient(create_app(layout.root)) as client:
        listed = client.get("/analyses", params={"kind": "pos"}).json()["analyses"]
        assert [a["analysis_id"] for a in listed] == [aid]
        assert client.get("/analyses", params={"kind": "layers"}).json()["analyses"] == []
        one = client.get(f"/analyses/{aid}").json()
        assert one["analysis"]["model_id"] == "m"
        assert sorted(r["tag"] for r in one["tables"]["pos_surprisal"]) == ["DET", "NOUN"]
        assert client.get("/analyses/nope").status_code == 404
        sql = client.post("/sql", json={"sql": "SELECT count(*) AS n FROM pos_surprisal"}).json()
        assert sql["rows"] == [[2]]


@pytest.mark.parametrize("view", ["analyses", "pos_surprisal", "layer_effects", "training_dynamics", "diff_pairs",
                                  "neg_share"])
def test_empty_store_has_every_analysis_view(tmp_path: Path, view: str) -> None:
    layout = _store(tmp_path)
    with negdb.connect(str(layout.root)) as cat:
        assert cat.sql(f"SELECT count(*) FROM {view}").item() == 0

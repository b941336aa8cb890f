import sqlite3

import pytest

from segedge.core.errors import ArtifactError
from segedge.core.results import ResultsStore

KEY = dict(machine_id="m1", profile="cpu", model="unet", precision="int8", height=64, width=128, batch=1)


def test_rows_are_committed_as_they_are_added(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    store.add({**KEY, "status": "ok", "median_ms": 5.0, "machine": {"cpu": "x"}})
    # a second connection (another process, or after a kill) sees it without close()
    count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    assert count == 1
    store.close()


def test_resume_skips_finished_rows_but_retries_failed_ones(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({**KEY, "status": "failed", "reason": "boom"})
        assert not store.has_finished(**KEY)
        store.add({**KEY, "status": "drop", "median_ms": 5.0})
        assert store.has_finished(**KEY)
        assert not store.has_finished(**{**KEY, "machine_id": "m2"})


def test_latest_rows_keep_the_newest_per_key(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add({**KEY, "status": "ok", "median_ms": 5.0})
        store.add({**KEY, "status": "ok", "median_ms": 4.0})
        store.add({**KEY, "precision": "fp32", "status": "ok", "median_ms": 9.0})
        latest = {r["precision"]: r["median_ms"] for r in store.latest_rows()}
    assert latest == {"int8": 4.0, "fp32": 9.0}


def test_merge_adds_another_machines_rows_once(tmp_path):
    with ResultsStore(tmp_path / "jetson.sqlite") as jetson:
        jetson.add({**KEY, "machine_id": "jetson", "profile": "jetson-orin-nano", "status": "ok", "median_ms": 30.0})
    with ResultsStore(tmp_path / "desk.sqlite") as desk:
        desk.add({**KEY, "status": "ok", "median_ms": 5.0})
        assert desk.merge(tmp_path / "jetson.sqlite") == 1
        assert desk.merge(tmp_path / "jetson.sqlite") == 0
        assert {r["profile"] for r in desk.rows()} == {"cpu", "jetson-orin-nano"}


def test_unknown_column_and_bad_files_are_refused(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="unknown result columns"):
            store.add({**KEY, "latency": 1})
        with pytest.raises(ArtifactError, match="does not exist"):
            store.merge(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ArtifactError, match="not a usable SQLite file"):
        ResultsStore(bad)

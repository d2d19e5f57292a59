from __future__ import annotations

import math
import sqlite3

import pytest

from node_exporter_ml.drift.store import (
    DB_NAME,
    RETAIN_FACTOR,
    Observation,
    Store,
    StoreError,
    Window,
)


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "state"))
    s.open()
    yield s
    s.close()


def obs(i: int, ts: float = 0.0, **kw) -> Observation:
    return Observation(features={"x": float(i), "c": f"k{i % 3}"}, obs_id=f"id{i}", ts=ts, **kw)


def test_open_sets_wal_and_full_sync(store, tmp_path):
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "state" / DB_NAME).exists()


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StoreError, match=r"--state\.dir: .*file/drift\.sqlite3"):
        Store(str(blocker)).open()


def test_reference_versions_and_roundtrip(store):
    assert store.get_reference("m") is None
    v1 = store.put_reference("m", "json", b'{"columns":{"a":[1]}}', {"drift_share": 0.3}, 1, 1)
    v2 = store.put_reference("m", "csv", b"a\n1\n2\n", {}, 2, 1)
    assert (v1, v2) == (1, 2)
    ref = store.get_reference("m")
    assert ref is not None
    assert (ref.format, ref.data, ref.options, ref.n_rows, ref.version) == (
        "csv",
        b"a\n1\n2\n",
        {},
        2,
        2,
    )
    assert store.models() == ["m"]


def test_observations_need_a_reference(store):
    with pytest.raises(KeyError):
        store.add_observations("m", [obs(1)])
    with pytest.raises(KeyError):
        store.add_labels("m", [("id1", 1)])


def test_rows_window_is_the_newest_rows_oldest_first(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    store.put_reference("other", "json", b"{}", {}, 1, 1)
    store.add_observations("m", [obs(i, prediction="a", confidence=0.5) for i in range(30)])
    store.add_observations("other", [obs(100)])
    window = store.window("m", Window(rows=10))
    assert [o.features["x"] for o in window] == [float(i) for i in range(20, 30)]
    assert window[0].prediction == "a"
    assert window[0].confidence == 0.5
    assert window[0].obs_id == "id20"


def test_time_window_and_nan_roundtrip(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    store.add_observations("m", [obs(i, ts=1000.0 + i) for i in range(10)])
    store.add_observations("m", [Observation(features={"x": math.nan}, ts=1009.5)])
    window = store.window("m", Window(seconds=3.0), now=1010.0)
    assert [o.ts for o in window] == [1007.0, 1008.0, 1009.0, 1009.5]
    assert math.isnan(window[-1].features["x"])


def test_labels_join_latest_prediction_and_relabel(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    store.add_observations("m", [obs(1, prediction="a"), obs(2, prediction="b")])
    store.add_observations("m", [obs(1, prediction="c")])  # the same id again: latest wins
    assert store.add_labels("m", [("id1", "a"), ("id2", "b"), ("zz", "x")]) == (3, 2)
    store.add_labels("m", [("id2", "a")])  # relabel moves id2 to the end
    joined = store.labeled("m", Window(rows=10))
    assert [(j.obs_id, j.label, j.prediction, j.matched) for j in joined] == [
        ("id1", "a", "c", True),
        ("zz", "x", None, False),
        ("id2", "a", "b", True),
    ]
    assert [j.obs_id for j in store.labeled("m", Window(rows=1))] == ["id2"]


def test_version_changes_with_every_write(store):
    assert store.version("m") == (0, 0, 0)
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    v1 = store.version("m")
    store.add_observations("m", [obs(1)])
    v2 = store.version("m")
    store.add_labels("m", [("id1", 1)])
    v3 = store.version("m")
    assert v1 < v2 < v3
    assert v1[0] == 1


def test_prune_keeps_retain_factor_windows(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    store.add_observations("m", [obs(i) for i in range(50)])
    store.add_labels("m", [(f"id{i}", i) for i in range(50)])
    dropped = store.prune("m", Window(rows=2))
    keep = 2 * RETAIN_FACTOR
    assert dropped == 2 * (50 - keep)
    assert store.counts("m") == (keep, keep)
    assert store.window("m", Window(rows=100))[0].features["x"] == float(50 - keep)


def test_prune_by_time(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)
    store.add_observations("m", [obs(i, ts=float(i)) for i in range(100)])
    store.prune("m", Window(rows=1000, seconds=5.0), now=100.0)
    assert store.counts("m")[0] == 50  # ts >= 100 - 5 * RETAIN_FACTOR


def test_results_survive_reopen_and_delete(tmp_path):
    s = Store(str(tmp_path / "s"))
    s.open()
    s.put_reference("m", "json", b"{}", {}, 1, 1)
    s.add_observations("m", [obs(1)])
    s.put_result("m", 5.0, {"dataset": None, "score": math.inf})
    s.close()
    s = Store(str(tmp_path / "s"))
    s.open()
    assert s.results()["m"]["dataset"] is None
    assert len(s.window("m", Window())) == 1
    assert s.delete_model("m") is True
    assert s.delete_model("m") is False
    assert s.results() == {}
    assert s.counts("m") == (0, 0)
    s.close()


def test_failed_transaction_rolls_back(store):
    store.put_reference("m", "json", b"{}", {}, 1, 1)

    def write_then_fail() -> None:
        with store._tx() as conn:
            conn.execute("INSERT INTO observation (model, ts, features) VALUES ('m', 1, '{}')")
            conn.execute("INSERT INTO nope VALUES (1)")

    with pytest.raises(sqlite3.Error):
        write_then_fail()
    assert store.counts("m") == (0, 0)


def test_schema_version_mismatch_is_refused(tmp_path):
    s = Store(str(tmp_path / "s"))
    s.open()
    s._connection().execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    s.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(str(tmp_path / "s")).open()

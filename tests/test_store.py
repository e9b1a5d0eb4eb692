import multiprocessing as mp

import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import check_label_identity
from lamp_bench.results.store import EpisodeStore


def make_record(task_id, init_index, success=True, label="p", finished_at="2026-01-01T00:00:00", **extra):
    return {"label": label, "policy": "p", "suite": "s", "task_id": task_id, "init_index": init_index,
            "seed": 0, "success": success, "status": extra.pop("status", "success" if success else "failure"),
            "steps": 3, "finished_at": finished_at, "checkpoint_hash": extra.pop("checkpoint_hash", None), **extra}


def test_append_read_and_dedupe_keeps_earliest(tmp_path):
    store = EpisodeStore(tmp_path)
    first, second = store.writer(), store.writer()
    first.append(make_record(0, 0, success=False, finished_at="2026-01-01T00:00:02"))
    second.append(make_record(0, 0, success=True, finished_at="2026-01-01T00:00:01"))
    second.append(make_record(0, 1))
    first.close(), second.close()
    records = store.records()
    assert len(records) == 2
    assert {(r["init_index"], r["success"]) for r in records} == {(0, True), (1, True)}
    assert len(list(store.iter_raw())) == 3


def test_torn_and_malformed_lines_are_ignored(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer()
    writer.append(make_record(0, 0))
    writer.close()
    with open(writer.path, "a") as f:
        f.write('{"label": "p", "suite": "s", "task_id": 0, "init_in')  # killed mid-write
    (store.episodes_dir / "garbage.jsonl").write_text('not json\n{"only": "partial"}\n')
    assert [r["init_index"] for r in store.records()] == [0]


def test_missing_required_field_is_rejected(tmp_path):
    writer = EpisodeStore(tmp_path).writer()
    with pytest.raises(ValueError, match="lacks"):
        writer.append({"label": "p"})


def _append_many(root, worker, count):
    writer = EpisodeStore(root).writer()
    for i in range(count):
        writer.append(make_record(worker, i))
    writer.close()


def test_concurrent_writers_never_lose_or_duplicate(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    store = EpisodeStore(tmp_path)
    assert len(store.shards()) == 4
    assert sorted((r["task_id"], r["init_index"]) for r in store.records()) == [
        (w, i) for w in range(4) for i in range(200)]


def test_one_label_never_mixes_two_checkpoints(tmp_path):
    store = EpisodeStore(tmp_path)
    writer = store.writer()
    writer.append(make_record(0, 0, checkpoint_hash="aaa"))
    writer.close()
    check_label_identity(store, "p", "aaa")
    check_label_identity(store, "other", "bbb")
    with pytest.raises(ConfigError, match="another checkpoint"):
        check_label_identity(store, "p", "bbb")


def test_dataframe_flattens_info(tmp_path):
    writer = EpisodeStore(tmp_path).writer()
    writer.append(make_record(0, 0, info={"category": "Camera Viewpoints", "nested": {"x": 1}}))
    writer.close()
    frame = EpisodeStore(tmp_path).dataframe()
    assert frame.loc[0, "info.category"] == "Camera Viewpoints"
    assert "info.nested" not in frame.columns


def test_an_env_error_is_not_done_and_its_retry_replaces_it(tmp_path):
    """Resume retries environment errors; a later resolved record of the key beats the earlier env error,
    while between two resolved records the earliest still wins."""
    store = EpisodeStore(tmp_path)
    writer = store.writer()
    writer.append(make_record(0, 0, success=False, status="env_error", finished_at="2026-01-01T00:00:01"))
    writer.append(make_record(0, 1, success=False, status="policy_error", finished_at="2026-01-01T00:00:01"))
    assert store.done_keys("p") == {("p", "s", 0, 1, 0)}
    writer.append(make_record(0, 0, success=True, finished_at="2026-01-01T00:00:05"))
    writer.append(make_record(0, 1, success=True, finished_at="2026-01-01T00:00:06"))
    writer.close()
    assert {r["init_index"]: r["status"] for r in store.records()} == {0: "success", 1: "policy_error"}
    assert store.done_keys("p") == {("p", "s", 0, 0, 0), ("p", "s", 0, 1, 0)}


def test_episode_record_round_trip_and_schema_1_records():
    from lamp_bench.results.record import SCHEMA_VERSION, EpisodeRecord

    record = EpisodeRecord(label="p", policy="p", suite="s", task_id=1, init_index=2, seed=3, task_name="t",
                           instruction="do", status="success", success=True, steps=4, wall_time_s=0.5,
                           failure_reason=None, checkpoint_hash=None, finished_at="2026-01-01T00:00:00",
                           protocol="abc")
    assert EpisodeRecord.from_json(record.to_json()) == record and record.key() == ("p", "s", 1, 2, 3)
    assert record.schema == SCHEMA_VERSION
    old = EpisodeRecord.from_json({**make_record(0, 0, success=False), "status": "error", "failure_reason": "x"})
    assert (old.status, old.schema, old.protocol) == ("policy_error", 1, "")
    with pytest.raises(ValueError, match="contradicts status"):
        EpisodeRecord.from_json({**record.to_json(), "success": False})
    with pytest.raises(ValueError, match="status must be one of"):
        EpisodeRecord.from_json({**record.to_json(), "status": "crashed"})

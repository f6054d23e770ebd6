"""The batch job's executor side: slices, best rows, the read-ahead, and the preloaded workers."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from propensity.batch.worker import SnapshotSlice, ahead, best_rows, plan_slices


def test_slices_cover_every_row_once_and_never_span_row_groups():
    assert plan_slices([1000], 1) == [SnapshotSlice(0, 0, 1000)]
    assert plan_slices([1000], 0) == [SnapshotSlice(0, 0, 1000)]
    assert plan_slices([1000], 3) == [
        SnapshotSlice(0, 0, 333),
        SnapshotSlice(0, 333, 333),
        SnapshotSlice(0, 666, 334),
    ]
    # Two groups of unequal size asked for 4 slices: shares by size, at least one each.
    four = plan_slices([300, 100], 4)
    assert four == [
        SnapshotSlice(0, 0, 100),
        SnapshotSlice(0, 100, 100),
        SnapshotSlice(0, 200, 100),
        SnapshotSlice(1, 0, 100),
    ]
    assert plan_slices([5, 0, 7], 1) == [
        SnapshotSlice(0, 0, 5),
        SnapshotSlice(2, 0, 7),
    ]  # empty groups: no task
    assert plan_slices([], 2) == [] and plan_slices([0], 2) == []
    assert len(plan_slices([1000, 1000, 1000], 4)) >= 4 and len(plan_slices([3, 3, 3], 4)) >= 4  # at least


def test_best_rows_keep_ties_at_the_threshold():
    ids = pa.array(["a", "b", "c", "d", "e", "f"])
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.5, 0.2])
    assert best_rows(ids, scores, 2) == (["b", "d"], pytest.approx([0.9, 0.9]))
    kept, values = best_rows(ids, scores, 3)  # the third place is a tie: both 0.5 rows stay
    assert kept == ["b", "c", "d", "e"] and values.tolist() == [0.9, 0.5, 0.9, 0.5]
    assert best_rows(["x"], np.array([0.3]), 10) == (["x"], pytest.approx([0.3]))
    assert best_rows(ids, scores, 0)[0] == []


def test_the_union_of_per_task_best_rows_holds_the_global_top():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(10_000), 2)  # many ties
    ids = [f"c{i:05d}" for i in range(len(scores))]
    union: list[str] = []
    for lo in range(0, len(scores), 1_500):  # "tasks" of 1,500 rows, each merging batches of 400
        best: tuple[list[str], np.ndarray] = ([], np.empty(0))
        for b in range(lo, min(lo + 1_500, len(scores)), 400):
            top = best_rows(
                pa.array(ids[b : min(b + 400, lo + 1_500)]), scores[b : min(b + 400, lo + 1_500)], 10
            )
            best = best_rows(best[0] + top[0], np.concatenate([best[1], top[1]]), 10)
        union += best[0]
    everything = sorted(zip(ids, scores, strict=True), key=lambda r: (-r[1], r[0]))[:10]
    among = {i: s for i, s in zip(ids, scores, strict=True) if i in set(union)}
    assert sorted(among.items(), key=lambda r: (-r[1], r[0]))[:10] == everything


def test_read_ahead_keeps_order_raises_the_producers_error_and_stops_with_the_consumer():
    assert list(ahead(iter(range(100)), depth=2)) == list(range(100))

    def failing():
        yield 1
        raise ValueError("slice 7 unreadable")

    got = []
    with pytest.raises(ValueError, match="slice 7 unreadable"):
        for item in ahead(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def counting():
        for i in range(1_000):
            produced.append(i)
            yield i

    threads = threading.active_count()
    source = counting()
    stream = ahead(source, depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer gives up (e.g. its COPY failed): the producer stops soon after
    assert len(produced) <= 5
    assert threading.active_count() == threads and source.gi_frame is None  # thread gone, source closed


def test_spark_workers_fork_from_a_daemon_with_the_scorer_preloaded(spark):
    """The workers have the batch scorer's modules before their first task and an xgboost
    without scikit-learn; this process (the driver) keeps its own xgboost as it was."""

    def inspect(_):
        import sys as worker_sys

        import xgboost

        yield (
            "propensity.batch.worker" in worker_sys.modules,
            bool(xgboost.compat.SKLEARN_INSTALLED),
            "sklearn" in worker_sys.modules,
        )

    assert spark.sparkContext.parallelize([0], 1).mapPartitions(inspect).collect() == [(True, False, False)]
    import xgboost

    assert xgboost.compat.SKLEARN_INSTALLED  # scikit-learn is installed in this venv


def test_a_slice_is_read_in_batches_exactly_whatever_the_boundaries(tmp_path):
    import pyarrow.parquet as pq

    from propensity.batch.worker import SnapshotSource
    from propensity.core.storage import open_store

    table = pa.table(
        {"customer_id": [f"c{i:03d}" for i in range(100)], "x": list(range(100)), "y": [0.5] * 100}
    )
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=60)  # row groups of 60 and 40
    source = SnapshotSource(open_store(str(tmp_path)), str(tmp_path / "s.parquet"), ("customer_id", "x"), 7)
    for piece in (
        SnapshotSlice(0, 0, 60),
        SnapshotSlice(0, 13, 29),
        SnapshotSlice(1, 33, 7),
        SnapshotSlice(0, 59, 1),
    ):
        batches = list(source.batches(piece))
        assert all(b.num_rows <= 7 for b in batches)
        first = 0 if piece.row_group == 0 else 60
        want = table.select(["customer_id", "x"]).slice(first + piece.offset, piece.length)
        assert pa.Table.from_batches(batches).equals(want)

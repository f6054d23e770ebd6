"""The job around the DataFrame functions: validated partitions in, atomic snapshots out."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from feature_events import UK, line, table

from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS, zone_store
from propensity.features import job as features
from propensity.features.job import (
    FeatureInputError,
    compute_features,
    content_hash,
    customer_features,
    read_snapshot,
    read_validated,
    snapshot_dates,
    to_snapshots,
)

FIRST, LAST = dt.date(2011, 3, 1), dt.date(2011, 3, 10)
STORY = [
    line("A", "2011-03-01 09:00:00", "O1", "X", 1, 4.0, country=UK),
    line("A", "2011-03-04 09:00:00", "O2", "Y", 2, 3.0, country=UK),
    line("B", "2011-03-04 18:30:00", "O3", "X", 1, 20.0),
    line("B", "2011-03-08 10:00:00", "R1", "X", -1, 20.0),
    line("A", "2011-03-09 23:00:00", "O4", "Z", 1, 1.0, country=UK),
]


def write_validated(settings, rows=STORY, first=FIRST, last=LAST, skip=()):
    """One validated partition per day (empty on days without events), as validation writes them."""
    store = zone_store(settings)
    full = table(rows)
    day = first
    while day <= last:
        if day not in skip:
            days = pc.cast(full.column("event_time"), pa.date32())
            write_partition(store, *VALIDATED_EVENTS, day, full.filter(pc.equal(days, day)))
        day += dt.timedelta(days=1)


def test_job_writes_one_snapshot_per_date(spark, settings):
    write_validated(settings)
    dates = [dt.date(2011, 3, 5), dt.date(2011, 3, 11)]
    uris = compute_features(settings, dates)
    assert [u.rsplit("/", 2)[1] for u in uris] == ["date=2011-03-05", "date=2011-03-11"]
    assert snapshot_dates(settings) == dates
    mar5 = {r["customer_id"]: r for r in read_snapshot(settings, dates[0]).to_pylist()}
    assert mar5["A"]["orders_7d"] == 2 and mar5["A"]["spend_7d"] == 10.0
    assert mar5["B"]["recency_days"] == 1 and mar5["B"]["return_rate_90d"] == 0.0
    mar11 = {r["customer_id"]: r for r in read_snapshot(settings, dates[1]).to_pylist()}
    assert mar11["A"]["recency_days"] == 2 and mar11["A"]["orders_7d"] == 2  # O2 (Mar 4), O4 (Mar 9)
    assert mar11["B"]["return_rate_90d"] == 0.5  # 20 returned of 20 + 20


def test_rerun_is_idempotent_and_one_pass_equals_one_date_at_a_time(spark, settings):
    write_validated(settings)
    dates = [dt.date(2011, 3, d) for d in (2, 5, 7, 11)]
    compute_features(settings, dates)
    together = {d: content_hash(read_snapshot(settings, d)) for d in dates}
    store = zone_store(settings)
    bytes_before = store.read_bytes(*SNAPSHOTS, "date=2011-03-07", "part-0.parquet")
    for d in dates:
        compute_features(settings, [d])
    assert {d: content_hash(read_snapshot(settings, d)) for d in dates} == together
    # Same bytes, not only the same rows: a re-run is invisible downstream.
    assert store.read_bytes(*SNAPSHOTS, "date=2011-03-07", "part-0.parquet") == bytes_before


def test_failure_mid_job_leaves_no_partial_partition_and_retry_succeeds(spark, settings, monkeypatch):
    write_validated(settings)
    dates = [dt.date(2011, 3, 5), dt.date(2011, 3, 6)]
    real_write = features.write_partition
    calls = []

    def crash_on_second(store, zone, dataset, day, tbl):
        calls.append(day)
        if len(calls) == 2:
            raise RuntimeError("killed while writing")
        return real_write(store, zone, dataset, day, tbl)

    monkeypatch.setattr(features, "write_partition", crash_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        compute_features(settings, dates)
    # The first date is complete, the second absent; no temporary file is left behind.
    assert snapshot_dates(settings) == [dates[0]]
    folder = os.path.join(settings.zone_root, *SNAPSHOTS)
    assert sorted(os.listdir(folder)) == ["date=2011-03-05"]
    assert os.listdir(os.path.join(folder, "date=2011-03-05")) == ["part-0.parquet"]

    # A failure inside Spark writes nothing at all.
    monkeypatch.setattr(features, "write_partition", real_write)
    monkeypatch.setattr(
        features, "to_snapshots", lambda frame: (_ for _ in ()).throw(RuntimeError("executor lost"))
    )
    with pytest.raises(RuntimeError, match="executor lost"):
        compute_features(settings, [dt.date(2011, 3, 8)])
    assert snapshot_dates(settings) == [dates[0]]

    monkeypatch.undo()
    assert compute_features(settings, dates)
    assert snapshot_dates(settings) == dates


def test_missing_validated_day_is_named(spark, settings):
    write_validated(settings, skip={dt.date(2011, 3, 6)})
    with pytest.raises(FeatureInputError, match="date=2011-03-06"):
        compute_features(settings, [dt.date(2011, 3, 9)])
    # A snapshot before the gap does not need it.
    assert compute_features(settings, [dt.date(2011, 3, 6)])


def test_no_validated_data_is_a_clear_error(settings):
    with pytest.raises(FeatureInputError, match="no validated partitions"):
        compute_features(settings, [dt.date(2011, 3, 9)])


def test_arrow_and_spark_readers_give_the_same_events_and_snapshot(spark, settings):
    """Both input paths of the job: Spark's own reader (local zones) and Arrow (S3 zones)."""
    write_validated(settings)
    store = zone_store(settings)
    days = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
    via_arrow = read_validated(spark, store, days, via_arrow=True)
    via_spark = read_validated(spark, store, days)
    # Mar 2-3 and 5-7 are empty partitions between days with events: none may cut the input short.
    assert via_arrow.count() == via_spark.count() == len(STORY)

    def key(r):
        return (r.customer_id, r.event_time, r.order_id, r.item_id)

    assert sorted(via_arrow.collect(), key=key) == sorted(via_spark.collect(), key=key)
    as_of = [dt.date(2011, 3, 11)]
    hashes = {
        content_hash(to_snapshots(customer_features(frame, as_of, home_countries=[UK]))[as_of[0]])
        for frame in (via_arrow, via_spark)
    }
    assert len(hashes) == 1


def test_jobs_in_one_process_share_one_running_session(spark, settings):
    from pyspark.sql import SparkSession

    write_validated(settings)
    compute_features(settings, [dt.date(2011, 3, 5)])
    compute_features(settings, [dt.date(2011, 3, 6)])
    # getOrCreate: the session of the first task serves the next; the job never stops it.
    assert SparkSession.getActiveSession() is spark
    assert not spark.sparkContext._jsc.sc().isStopped()
    assert snapshot_dates(settings) == [dt.date(2011, 3, 5), dt.date(2011, 3, 6)]

"""The direct training-set builder on hand-made partitions: point in time, labels, streaming, errors."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from propensity.core.cutoffs import plan_cutoffs
from propensity.core.schema import VALIDATED_SCHEMA
from propensity.core.settings import TrainingSettings
from propensity.core.storage import partition_parts, read_partition, write_partition
from propensity.core.zones import SNAPSHOTS, TRAINING_SETS, VALIDATED_EVENTS, zone_store
from propensity.features.spec import INT_FEATURES, MODEL_FEATURES, SNAPSHOT_SCHEMA
from propensity.training import snapshot_join
from propensity.training.dataset import TrainingSetError
from propensity.training.snapshot_join import (
    TRAINING_SCHEMA,
    build_training_table,
    iter_training_set,
    to_frame,
    training_set_for_rows,
    write_training_set,
)

D1, D2 = dt.date(2020, 3, 2), dt.date(2020, 3, 9)  # weekly cutoffs
HORIZON = 7


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def snapshot(day: dt.date, rows: dict[str, float], *, stamp: dt.datetime | None = None) -> pa.Table:
    """A snapshot whose every feature of customer c is rows[c] (+ the feature's index)."""
    ids = list(rows)
    cols: dict[str, list] = {
        "customer_id": ids,
        "event_timestamp": [stamp or midnight(day)] * len(ids),
    }
    for i, name in enumerate(MODEL_FEATURES):
        cols[name] = [int(rows[c]) + i if name in INT_FEATURES else rows[c] + i for c in ids]
    cols["country"] = ["US" if k % 2 == 0 else "CA" for k in range(len(ids))]
    return pa.Table.from_pydict(cols, schema=SNAPSHOT_SCHEMA)


def events(day: dt.date, lines: list[tuple]) -> pa.Table:
    """Validated lines (customer, seconds after the day's midnight, is_return, line_kind)."""
    n = len(lines)
    return pa.Table.from_pydict(
        {
            "customer_id": [c for c, *_ in lines],
            "event_time": [midnight(day) + dt.timedelta(seconds=s) for _, s, *_ in lines],
            "order_id": [f"o{i}" for i in range(n)],
            "item_id": ["SKU-1"] * n,
            "quantity": [-1 if r else 1 for _, _, r, _ in lines],
            "unit_price": [1.0] * n,
            "amount": [-1.0 if r else 1.0 for _, _, r, _ in lines],
            "is_return": [r for _, _, r, _ in lines],
            "country": ["US"] * n,
            "_source_file": ["f"] * n,
            "_source_row": list(range(1, n + 1)),
            "_parse_errors": [None] * n,
            "line_kind": [k for *_, k in lines],
        },
        schema=VALIDATED_SCHEMA,
    )


@pytest.fixture
def zone(make_settings):
    """Snapshots at D1 and D2 (and a daily one the day after D1), validated days D1-1 .. D2+7."""
    settings = make_settings(features={"label_days": HORIZON})
    store = zone_store(settings)
    write_partition(store, *SNAPSHOTS, D1, snapshot(D1, {"000100": 1.0, "000007": 2.0, "c": 3.0}))
    # The next day's snapshot holds other values for the same customers: it must never leak in.
    nxt = D1 + dt.timedelta(days=1)
    write_partition(store, *SNAPSHOTS, nxt, snapshot(nxt, {"000100": 50.0, "000007": 60.0}))
    write_partition(store, *SNAPSHOTS, D2, snapshot(D2, {"000007": 4.0, "c": 5.0, "d": 6.0}))
    last = 86_400 - 1
    lines: dict[dt.date, list[tuple]] = {d: [] for d in (D1 + dt.timedelta(days=i) for i in range(-1, 15))}
    lines[D1 - dt.timedelta(days=1)] += [("000100", last, False, "product")]  # 1 s before D1: not D1's label
    lines[D1] += [("000007", 0, False, "product")]  # at D1 00:00: inside D1's window
    lines[D1 + dt.timedelta(days=3)] += [
        ("c", 100, True, "product"),  # a return is not a purchase
        ("c", 200, False, "non_product"),  # a fee line is not a purchase
        (None, 300, False, "product"),  # a guest buys nobody's label
        ("e", 400, False, "product"),  # not in any snapshot: only rows asked for it get it
    ]
    lines[D2 - dt.timedelta(days=1)] += [("000100", last, False, "product")]  # last second of D1's window
    lines[D2] += [("d", 10, False, "product")]  # D2 00:00:10: D2's window only
    lines[D2 + dt.timedelta(days=HORIZON)] += [("c", 0, False, "product")]  # D2 + 7 days: outside
    for day, day_lines in lines.items():
        write_partition(store, *VALIDATED_EVENTS, day, events(day, day_lines))
    return settings


def test_each_cutoff_is_its_snapshot_beside_its_label(zone):
    table = build_training_table(zone, [D2, D1, D1])  # order and repeats do not matter
    assert table.schema == TRAINING_SCHEMA
    got = to_frame(table)
    assert list(got["cutoff"]) == [D1, D1, D1, D2, D2, D2]
    assert list(got["customer_id"]) == ["000007", "000100", "c", "000007", "c", "d"]  # sorted per cutoff
    # Features are exactly the cutoff's own snapshot, never the next day's.
    assert list(got["recency_days"]) == [2.0, 1.0, 3.0, 4.0, 5.0, 6.0]
    last = len(MODEL_FEATURES) - 1  # the fixture sets feature i to recency + i
    assert list(got[MODEL_FEATURES[-1]]) == [v + last for v in (2.0, 1.0, 3.0, 4.0, 5.0, 6.0)]
    # D1: 000007 at D1 00:00 yes, 000100 at D2 - 1 s yes (its D1 - 1 s line does not count), c only
    # returned and paid a fee. D2: d at D2 00:00:10; c's line at D2 + 7 days is outside.
    assert list(got["label"]) == [1, 1, 0, 0, 0, 1]
    assert got["label"].dtype == np.int64
    assert all(isinstance(c, dt.date) for c in got["cutoff"])


def test_a_row_stamped_after_its_cutoff_is_refused(zone):
    store = zone_store(zone)
    late = snapshot(D1, {"000100": 1.0}, stamp=midnight(D1) + dt.timedelta(hours=1))
    write_partition(store, *SNAPSHOTS, D1, late)
    with pytest.raises(TrainingSetError, match="not point-in-time for cutoff 2020-03-02"):
        build_training_table(zone, [D1])
    # The control: stamped exactly at the cutoff's midnight, the same snapshot is read.
    write_partition(store, *SNAPSHOTS, D1, snapshot(D1, {"000100": 1.0}))
    assert build_training_table(zone, [D1]).num_rows == 1


def test_missing_inputs_and_immature_labels_are_named(zone):
    with pytest.raises(TrainingSetError, match=r"date=2020-03-16/part-0.parquet is missing"):
        build_training_table(zone, [D2 + dt.timedelta(days=7)])
    with pytest.raises(TrainingSetError, match="matures on 2020-03-16, after the training date 2020-03-15"):
        build_training_table(zone, [D2], as_of=dt.date(2020, 3, 15))
    store = zone_store(zone)
    store.delete_dir(*partition_parts(*VALIDATED_EVENTS, D1 + dt.timedelta(days=2)))
    # A gap inside a window would turn buyers into zeros: refused, naming the day.
    with pytest.raises(TrainingSetError, match=r"1 day\(s\) missing .* \(e\.g\. 2020-03-04;"):
        build_training_table(zone, [D1])
    assert build_training_table(zone, [D2]).num_rows == 3  # D2's window does not need that day
    with pytest.raises(TrainingSetError, match="no cutoffs"):
        build_training_table(zone, [])


def test_unsorted_snapshots_are_sorted_and_duplicates_refused(zone):
    store = zone_store(zone)
    shuffled = snapshot(D1, {"c": 3.0, "000100": 1.0, "000007": 2.0})
    write_partition(store, *SNAPSHOTS, D1, shuffled)
    assert build_training_table(zone, [D1]).column("customer_id").to_pylist() == ["000007", "000100", "c"]
    doubled = pa.concat_tables([shuffled, shuffled.slice(0, 1)])
    write_partition(store, *SNAPSHOTS, D1, doubled)
    with pytest.raises(TrainingSetError, match="appears twice"):
        build_training_table(zone, [D1])


def test_each_validated_day_is_read_once_and_only_a_window_is_held(make_settings, monkeypatch):
    settings = make_settings()  # the 30-day label of the committed settings
    store = zone_store(settings)
    cutoffs = [D1 + dt.timedelta(weeks=k) for k in range(4)]
    for c in cutoffs:
        write_partition(store, *SNAPSHOTS, c, snapshot(c, {"a": 1.0, "b": 2.0}))
    days = [D1 + dt.timedelta(days=i) for i in range(21 + 30)]
    for d in days:
        write_partition(store, *VALIDATED_EVENTS, d, events(d, [("a", 60, False, "product")]))
    reads: list[dt.date] = []
    real = snapshot_join.day_buyers

    def counting(store, day):
        reads.append(day)
        return real(store, day)

    monkeypatch.setattr(snapshot_join, "day_buyers", counting)
    for table in iter_training_set(settings, cutoffs):
        assert table.column("label").to_pylist() == [1, 0]
    assert reads == days  # each of the 51 days exactly once, in order
    # What stays in memory between cutoffs: the current window's days, nothing older.
    window = snapshot_join.WindowBuyers(store, 30)
    for c in cutoffs:
        window.buyers(c)
        assert sorted(window.days) == [c + dt.timedelta(days=i) for i in range(30)]
    assert window.reads == len(days)


def test_write_streams_the_same_rows_and_replaces_atomically(zone, monkeypatch):
    store = zone_store(zone)
    as_of = dt.date(2020, 3, 20)
    result = write_training_set(zone, [D1, D2], as_of)
    assert result["rows"] == 6 and result["positives"] == 3
    assert result["rows_per_cutoff"] == {"2020-03-02": 3, "2020-03-09": 3}
    stored = read_partition(store, *TRAINING_SETS, as_of)
    assert stored.equals(build_training_table(zone, [D1, D2]))
    # A failing re-run (a cutoff's snapshot missing) leaves the stored set as it was, no temp file.
    before = store.read_bytes(*partition_parts(*TRAINING_SETS, as_of), "part-0.parquet")
    with pytest.raises(TrainingSetError, match="no feature snapshot for cutoff 2020-03-16"):
        write_training_set(zone, [D1, D2, D2 + dt.timedelta(days=7)], dt.date(2020, 3, 30))
    real = snapshot_join.read_snapshot_features

    def fail_on_d2(store, cutoff):
        if cutoff == D2:
            raise OSError("disk gone while reading D2")
        return real(store, cutoff)

    # Killed half-way, after D1's rows were written: the stored set is still the old one.
    monkeypatch.setattr(snapshot_join, "read_snapshot_features", fail_on_d2)
    with pytest.raises(OSError, match="disk gone"):
        write_training_set(zone, [D1, D2], as_of)
    with pytest.raises(OSError, match="disk gone"):
        write_training_set(zone, [D1, D2], dt.date(2020, 3, 30))
    monkeypatch.undo()
    assert store.read_bytes(*partition_parts(*TRAINING_SETS, as_of), "part-0.parquet") == before
    folder = store.path(*TRAINING_SETS)
    assert not [n for _, _, files in os.walk(folder) for n in files if n.startswith(".tmp-")]
    assert not store.exists(*TRAINING_SETS, "date=2020-03-30")
    # Snapshots without a single customer are no training set.
    empty = dt.date(2020, 2, 24)
    write_partition(store, *SNAPSHOTS, empty, SNAPSHOT_SCHEMA.empty_table())
    for i in range(HORIZON):
        day = empty + dt.timedelta(days=i)
        write_partition(store, *VALIDATED_EVENTS, day, events(day, []))
    with pytest.raises(TrainingSetError, match="no training rows"):
        write_training_set(zone, [empty], dt.date(2020, 3, 2))


def test_given_rows_keep_their_order_and_unknown_customers_get_nan(zone):
    rows = pd.DataFrame(
        {
            "customer_id": ["d", "e", "000100", "c", "000100"],
            "cutoff": [D2, D1, D1, D1, D2],
        }
    )
    got = training_set_for_rows(zone, rows)
    assert list(got.columns) == ["customer_id", "cutoff", *MODEL_FEATURES, "country", "label"]
    assert list(got["customer_id"]) == list(rows["customer_id"])
    assert list(got["cutoff"]) == list(rows["cutoff"])
    assert got["recency_days"].tolist()[0] == 6.0
    assert np.isnan(got.loc[1, "recency_days"]) and got.loc[1, "country"] is None  # e: in no snapshot
    assert got.loc[2, "recency_days"] == 1.0 and got.loc[3, "recency_days"] == 3.0
    assert np.isnan(got.loc[4, "recency_days"])  # 000100 is not in D2's snapshot
    # e bought inside D1's window: its label is 1 though it has no features (as Feast's path gives).
    assert list(got["label"]) == [1, 1, 1, 0, 0]
    with pytest.raises(TrainingSetError, match="midnight"):
        training_set_for_rows(zone, pd.DataFrame({"customer_id": ["c"], "cutoff": ["2020-03-02 10:00"]}))


def test_max_cutoffs_keeps_the_most_recent():
    full = plan_cutoffs(dt.date(2018, 1, 1), dt.date(2020, 6, 30), TrainingSettings(max_cutoffs=1000))
    capped = plan_cutoffs(dt.date(2018, 1, 1), dt.date(2020, 6, 30), TrainingSettings(max_cutoffs=10))
    assert len(full.all) > 100
    assert capped.all == full.all[-10:]
    assert capped.evaluation == full.evaluation and capped.valid == full.valid
    assert len(plan_cutoffs(dt.date(2018, 1, 1), dt.date(2020, 6, 30), TrainingSettings()).all) == 52
    with pytest.raises(ValueError, match="max_cutoffs=3 leaves no training cutoff"):
        TrainingSettings(max_cutoffs=3)

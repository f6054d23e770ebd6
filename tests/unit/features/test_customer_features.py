"""The feature job's DataFrame functions on hand-made events, expected values computed by hand."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from feature_events import EVENTS, UK, line, table

from propensity.features.job import content_hash, customer_features, to_snapshots
from propensity.features.spec import MODEL_FEATURES, SNAPSHOT_SCHEMA

D = dt.date(2011, 4, 1)
D2 = dt.date(2011, 4, 2)


def snapshot(spark, rows, dates=(D,), **kw):
    frame = customer_features(spark.createDataFrame(table(rows)), list(dates), home_countries=[UK], **kw)
    return to_snapshots(frame)


def by_customer(tbl):
    return {r["customer_id"]: r for r in tbl.to_pylist()}


def test_features_match_hand_computed_values(spark):
    snaps = snapshot(spark, EVENTS)
    tbl = snaps[D]
    assert tbl.schema == SNAPSHOT_SCHEMA
    rows = by_customer(tbl)
    # C's last order is 396 days old (inactive); the guest line has no customer.
    assert list(rows) == ["A", "B"]

    a = rows["A"]
    assert a["event_timestamp"] == dt.datetime(2011, 4, 1, tzinfo=dt.UTC)
    # Orders O1 (Jan 1 10:00), O2 (Mar 1 12:00), O3 (Mar 20 08:00); O4 at Apr 1 00:00 is not before D.
    assert a["recency_days"] == 12  # Mar 20 -> Apr 1
    assert a["tenure_days"] == 78  # Jan 1 -> Mar 20
    assert a["days_since_first_order"] == 90
    assert (a["orders_7d"], a["orders_30d"], a["orders_90d"], a["orders_365d"]) == (0, 1, 3, 3)
    # O2 is 30.5 days old: outside the 30-day window, inside the previous 30 days.
    assert (a["spend_7d"], a["spend_30d"], a["spend_90d"], a["spend_365d"]) == (0.0, 13.0, 35.5, 35.5)
    assert a["aov_90d"] == pytest.approx(35.5 / 3)
    assert a["distinct_items_90d"] == 3  # X, Y, Z (W is bought at D, POST is not a product)
    assert a["return_rate_90d"] == pytest.approx(10 / 45.5)  # R1 returned 10 of 35.5 + 10
    gaps = (59 + 2 / 24, 18 + 20 / 24)  # O1->O2, O2->O3 in days
    assert a["mean_days_between_orders"] == pytest.approx(sum(gaps) / 2)
    assert a["std_days_between_orders"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2)
    assert a["spend_trend_30d"] == pytest.approx(math.log(14) - math.log(11))
    assert a["is_home_country"] == 1.0
    assert a["country"] == UK

    b = rows["B"]
    assert (b["recency_days"], b["tenure_days"], b["days_since_first_order"]) == (356, 0, 356)
    assert (b["orders_90d"], b["orders_365d"], b["spend_365d"], b["spend_90d"]) == (0, 1, 100.0, 0.0)
    assert (b["aov_90d"], b["distinct_items_90d"], b["return_rate_90d"]) == (0.0, 0, 0.0)
    assert b["mean_days_between_orders"] is None and b["std_days_between_orders"] is None
    assert b["spend_trend_30d"] == 0.0
    assert b["is_home_country"] is None and b["country"] is None


def test_model_features_are_numeric_columns_of_the_snapshot():
    assert len(set(MODEL_FEATURES)) == len(MODEL_FEATURES)
    for name in MODEL_FEATURES:
        field = SNAPSHOT_SCHEMA.field(name)
        assert field.type in ("int64", "double"), name


def test_next_day_sees_the_midnight_order(spark):
    a = by_customer(snapshot(spark, EVENTS, dates=[D2])[D2])["A"]
    # The 90-day item window now starts Jan 2: Y (Jan 1 only) drops out, W comes in.
    assert (a["recency_days"], a["orders_7d"], a["spend_7d"], a["distinct_items_90d"]) == (1, 1, 7.0, 3)


def test_history_window_bounds_first_order(spark):
    # With 365 days of history, A's first order is still Jan 1, B's still Apr 10 2010.
    rows = by_customer(snapshot(spark, EVENTS, history_days=365)[D])
    assert rows["B"]["days_since_first_order"] == 356
    with pytest.raises(ValueError, match="history_days"):
        snapshot(spark, EVENTS, history_days=90)


def test_no_leak_from_events_at_or_after_the_cutoff(spark):
    """Point-in-time: events moved to the cutoff day (or later) must not change the snapshot."""
    baseline = snapshot(spark, EVENTS)[D]
    later = [
        # O3, moved from Mar 20 to the cutoff day, is gone from the snapshot (not leaked in).
        *EVENTS,
        line("A", "2011-04-01 00:00:00", "O8", "V", 9, 9.0, country="France"),
        line("A", "2011-04-01 23:59:59", "R9", "X", -3, 10.0, country=UK),
        line("B", "2011-04-01 12:00:00", "O9", "Q", 1, 1.0, country=UK),
        line("D", "2011-04-01 00:00:00", "O10", "Q", 1, 1.0, country=UK),
    ]
    assert content_hash(snapshot(spark, later)[D]) == content_hash(baseline)
    # The control: the same event one second before the cutoff does change it.
    early = [*EVENTS, line("B", "2011-03-31 23:59:59", "O9", "Q", 1, 1.0, country=UK)]
    assert content_hash(snapshot(spark, early)[D]) != content_hash(baseline)


def test_many_dates_in_one_pass_equal_each_date_alone(spark):
    dates = [dt.date(2011, 1, 2), dt.date(2011, 3, 5), D, D2, dt.date(2011, 6, 1)]
    together = snapshot(spark, EVENTS, dates=dates)
    for day in dates:
        alone = snapshot(spark, EVENTS, dates=[day])
        assert content_hash(together[day]) == content_hash(alone[day]), day
    # Jan 2: A's order of 14 hours before counts, and so does C's, 307 days old.
    assert sorted(by_customer(together[dt.date(2011, 1, 2)])) == ["A", "B", "C"]
    assert by_customer(together[dt.date(2011, 6, 1)])["A"]["recency_days"] == 61


def test_missing_column_is_named(spark):
    frame = spark.createDataFrame(table(EVENTS)).drop("line_kind")
    with pytest.raises(ValueError, match="line_kind"):
        customer_features(frame, [D])


def test_money_is_counted_in_exact_units_of_a_ten_thousandth(spark):
    from decimal import ROUND_HALF_UP, Decimal

    from pyspark.sql import functions as F

    from propensity.features.job import money_units

    # Float products and sums that are not what they print (0.1 + 0.2, 2.675, 17.7), signs, and
    # a half unit: each lands on the nearest 0.0001, halves away from zero, as a decimal would.
    # Amounts with a fifth decimal of 5 are ties a double product rounds the wrong way
    # (813.10575 * 10,000 = 8131057.4999...): they must round as the decimal does.
    amounts = [17.7, -17.7, 0.1 + 0.2, 2.675, 5e-05, -5e-05, 3 * 1.1, 0.0, 1234567.89, -0.0001]
    amounts += [0.00015, 813.10575, -813.10575, 5199.77925, 1.275 * 637.73, 12345678.12345]
    frame = spark.createDataFrame([(a,) for a in amounts], "amount double")
    got = [r[0] for r in frame.select(money_units(F.col("amount"))).collect()]
    want = [int(Decimal(repr(a)).quantize(Decimal("0.0001"), ROUND_HALF_UP).scaleb(4)) for a in amounts]
    assert got == want
    assert got[:10] == [177000, -177000, 3000, 26750, 1, -1, 33000, 0, 12345678900, -1]
    assert got[10:14] == [2, 8131058, -8131058, 51997793]


def test_history_longer_than_exact_gap_sums_allow_is_refused(spark):
    with pytest.raises(ValueError, match="history_days=40000"):
        snapshot(spark, EVENTS, history_days=40_000)


# -- issue 19: BTYD quantities and rhythm -----------------------------------

NEW_FEATURES = (
    "purchase_days",
    "recency_gap_ratio",
    "bgnbd_p_alive",
    "bgnbd_expected_30d",
)


def test_new_features_match_hand_computed_values(spark):
    rows = by_customer(snapshot(spark, EVENTS)[D])
    a, b = rows["A"], rows["B"]
    # A's orders before D: O1 (Jan 1), O2 (Mar 1), O3 (Mar 20), on three days; B's one order.
    assert a["purchase_days"] == 3 and b["purchase_days"] == 1
    gaps = (59 + 2 / 24, 18 + 20 / 24)
    assert a["recency_gap_ratio"] == pytest.approx(12 / (sum(gaps) / 2))
    assert b["recency_gap_ratio"] is None  # one order: no rhythm
    # BG/NBD on the snapshot's two customers: probabilities and expectations, or null together.
    for r in (a, b):
        if r["bgnbd_p_alive"] is None:
            assert r["bgnbd_expected_30d"] is None
        else:
            assert 0 < r["bgnbd_p_alive"] <= 1 and r["bgnbd_expected_30d"] >= 0


FUTURE = [
    line("A", "2011-04-01 00:00:00", "O8", "V", 9, 9.0, country=UK),
    line("A", "2011-04-20 10:00:00", "O11", "V", 2, 3.0, country=UK),
    line("B", "2011-04-01 12:00:00", "O9", "Q", 1, 1.0, country=UK),
    line("D", "2011-04-01 00:00:00", "O10", "Q", 1, 1.0, country=UK),  # a new customer, from D on
]


@pytest.mark.parametrize("feature", NEW_FEATURES)
def test_new_feature_ignores_events_at_or_after_the_cutoff(spark, feature):
    """Point-in-time, per new feature: plant orders at and after the cutoff, nothing moves (the
    BG/NBD columns also see no new customer in their fit); an order one second before does."""
    before = by_customer(snapshot(spark, EVENTS)[D])
    after = by_customer(snapshot(spark, [*EVENTS, *FUTURE])[D])
    assert sorted(after) == sorted(before) == ["A", "B"]
    assert {c: r[feature] for c, r in after.items()} == {c: r[feature] for c, r in before.items()}
    early = by_customer(
        snapshot(spark, [*EVENTS, line("B", "2011-03-31 12:00:00", "O9", "Q", 1, 1.0, country=UK)])[D]
    )
    assert early["B"][feature] != before["B"][feature]

"""The features DAG run by Airflow itself (`airflow dags test`), and backfill equivalence.

Validated partitions are hand-made here (six weeks, a few dozen customers with known buying
rhythms), so the run is quick and its values are known. The DAG writes the snapshot and
materializes it into a SQLite online store of its own; both are checked from this process.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from airflow_cli import AIRFLOW, cli_env

from propensity.core.schema import VALIDATED_SCHEMA
from propensity.core.settings import Settings, committed_settings
from propensity.core.storage import write_partition
from propensity.core.zones import VALIDATED_EVENTS, zone_store
from propensity.features.job import compute_features, compute_features_for_run, content_hash, read_snapshot
from propensity.features.spec import MODEL_FEATURES
from propensity.features.store import CustomerFeatures, NoFeatures, online_features

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST, LAST = dt.date(2011, 1, 20), dt.date(2011, 2, 28)
LOGICAL = "2011-02-27"  # the run owns Feb 27 and computes the snapshot as of Feb 28
AS_OF = dt.date(2011, 2, 28)
UK = "United Kingdom"


def day_events(day: dt.date) -> pa.Table:
    """Customer i buys every (i % 6 + 1) days at 10:00 + i minutes; every 5th also returns a line."""
    rows = []
    for i in range(40):
        if (day - FIRST).days % (i % 6 + 1):
            continue
        when = dt.datetime.combine(day, dt.time(10, i), tzinfo=dt.UTC)
        order = f"{day:%m%d}-{i}"
        for item, qty, price in ((f"I{i % 7}", 2, 1.5 + i), (f"I{day.day % 5}", 1, 0.25)):
            rows.append((f"C{i:02d}", when, order, item, qty, price, False))
        if i % 5 == 0:
            rows.append(
                (f"C{i:02d}", when + dt.timedelta(hours=1), f"R{order}", f"I{i % 7}", -1, 1.5 + i, True)
            )
    cid, times, orders, items, qty, price, ret = (list(c) for c in zip(*rows, strict=True))
    n = len(cid)
    country = [None if c.endswith("3") else (UK if int(c[1:]) % 2 else "France") for c in cid]
    data = {
        "customer_id": cid,
        "event_time": times,
        "order_id": orders,
        "item_id": items,
        "quantity": qty,
        "unit_price": price,
        "amount": [q * p for q, p in zip(qty, price, strict=True)],
        "is_return": ret,
        "country": country,
        "_source_file": ["hand-made"] * n,
        "_source_row": list(range(1, n + 1)),
        "_parse_errors": [None] * n,
        "line_kind": ["product"] * n,
    }
    return pa.Table.from_pydict(data, schema=VALIDATED_SCHEMA)


def settings_at(root: Path) -> Settings:
    overrides = {
        "zone_root": str(root / "zones"),
        "cache_dir": str(root / "cache"),
        "spark": {"master": "local[1]"},
        "features": {
            "online_store": "sqlite",
            "registry": str(root / "feast" / "registry.db"),
            "sqlite_path": str(root / "feast" / "online.db"),
        },
    }
    return committed_settings(**overrides)


def write_validated(settings: Settings) -> None:
    store = zone_store(settings)
    day = FIRST
    while day <= LAST:
        write_partition(store, *VALIDATED_EVENTS, day, day_events(day))
        day += dt.timedelta(days=1)


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory) -> Path:
    """`airflow dags test features 2011-02-27` over a temporary DB, zone root and Feast store."""
    tmp = tmp_path_factory.mktemp("airflow-features")
    write_validated(settings_at(tmp))
    env = cli_env(
        tmp,
        {
            "PROPENSITY_ZONE_ROOT": str(tmp / "zones"),
            "PROPENSITY_CACHE_DIR": str(tmp / "cache"),
            "PROPENSITY_SPARK__MASTER": "local[1]",
            "PROPENSITY_FEATURES__ONLINE_STORE": "sqlite",
            "PROPENSITY_FEATURES__REGISTRY": str(tmp / "feast" / "registry.db"),
            "PROPENSITY_FEATURES__SQLITE_PATH": str(tmp / "feast" / "online.db"),
        },
    )
    run = subprocess.run(
        [AIRFLOW, "dags", "test", "features", LOGICAL], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp


def test_dags_test_writes_the_snapshot_after_the_logical_day_and_serves_it_online(dag_run):
    settings = settings_at(dag_run)
    snapshot = {r["customer_id"]: r for r in read_snapshot(settings, AS_OF).to_pylist()}
    assert len(snapshot) == 40
    # C00 buys daily (Jan 20 .. Feb 27 seen; Feb 28 is after the run's day) and returns daily.
    c00 = snapshot["C00"]
    assert c00["event_timestamp"] == dt.datetime(2011, 2, 28, tzinfo=dt.UTC)
    assert (c00["recency_days"], c00["tenure_days"], c00["days_since_first_order"]) == (1, 38, 39)
    assert (c00["orders_7d"], c00["orders_30d"], c00["orders_365d"]) == (7, 30, 39)
    assert c00["spend_7d"] == 7 * (2 * 1.5 + 0.25)
    assert c00["return_rate_90d"] == pytest.approx(1.5 / (3.25 + 1.5))  # 39 x 1.5 of 39 x (3.25 + 1.5)
    assert (c00["mean_days_between_orders"], c00["std_days_between_orders"]) == (1.0, 0.0)
    assert c00["is_home_country"] == 0.0 and c00["country"] == "France"
    # C05 buys every 6 days: Jan 20, 26, Feb 1, 7, 13, 19, 25.
    c05 = snapshot["C05"]
    assert (c05["recency_days"], c05["orders_7d"], c05["orders_30d"], c05["orders_365d"]) == (3, 1, 5, 7)
    assert c05["mean_days_between_orders"] == 6.0 and c05["is_home_country"] == 1.0
    assert snapshot["C03"]["country"] is None and snapshot["C03"]["is_home_country"] is None

    # Online: the materialized values equal the offline ones; an unknown customer is typed.
    got = online_features(settings, ["C00", "C05", "nobody"])
    assert got[2] == NoFeatures("nobody")
    for cid, online in zip(("C00", "C05"), got[:2], strict=True):
        assert isinstance(online, CustomerFeatures)
        assert online.as_of == dt.datetime(2011, 2, 28, tzinfo=dt.UTC)
        assert {n: online.values[n] for n in MODEL_FEATURES} == {n: snapshot[cid][n] for n in MODEL_FEATURES}


def test_thirty_daily_runs_equal_one_backfill_pass(dag_run, tmp_path, spark):
    """30 runs, one per logical day (function level: compute_features_for_run with each run's
    data interval, as the DAG task calls it), give the same content as one pass over the 30
    dates, and the same as the Airflow run for its date."""
    daily, one_pass = settings_at(tmp_path / "daily"), settings_at(tmp_path / "one_pass")
    write_validated(daily)
    write_validated(one_pass)
    logical = [dt.date(2011, 1, 29) + dt.timedelta(days=i) for i in range(30)]  # .. Feb 27
    for day in logical:
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
        assert compute_features_for_run(daily, [], end)["as_of"] == [(day + dt.timedelta(days=1)).isoformat()]
    dates = [d + dt.timedelta(days=1) for d in logical]
    compute_features(one_pass, dates)
    for day in dates:
        assert content_hash(read_snapshot(daily, day)) == content_hash(read_snapshot(one_pass, day)), day
    assert dates[-1] == AS_OF
    assert content_hash(read_snapshot(settings_at(dag_run), AS_OF)) == content_hash(
        read_snapshot(daily, AS_OF)
    )

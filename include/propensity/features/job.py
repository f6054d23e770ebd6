"""Features stage: every active customer's features as of a date, from validated events, in Spark.

Snapshot convention: the snapshot ``as_of`` D holds one row per customer who placed at least one
order (a non-return product line) in the 365 days before D, computed only from events with
``event_time < D 00:00 UTC``; its ``event_timestamp`` is D 00:00 UTC. It is stored at
``offline/customer_features/date=D/part-0.parquet`` (the Feast offline source).

The features, their definitions and the snapshot schema are in :mod:`propensity.features.spec`.

Over 500 lines: one Spark plan (line aggregations, per-customer features, the per-snapshot BG/NBD
fit) and its two IO paths (driver or executors) read together; splitting would cut the plan.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from propensity.core.errors import DataError
from propensity.core.settings import Settings
from propensity.core.storage import (
    PART_FILE,
    Store,
    list_partitions,
    partition_parts,
    read_partition,
    write_partition,
)
from propensity.core.timeutil import utc_midnight
from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS, zone_store
from propensity.features.spec import (
    ACTIVE_DAYS,
    BTYD_HORIZON_DAYS,
    ENTITY_KEY,
    SNAPSHOT_SCHEMA,
    TIMESTAMP,
    WINDOWS,
)

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("customer_id", "event_time", "order_id", "item_id", "amount", "is_return", "country")

_DAY_S = 86_400
_MAX_HISTORY_DAYS = 30_000  # (30,000 days in seconds)^2 = 6.7e18 < 2^63: gap-square sums fit a long
_LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"
# Exact money: integer units of 0.0001, summed as longs rather than DECIMAL(22,4): Spark adds
# decimals of that size as Java BigDecimals and its hash aggregation then skips its fast map;
# longs halved the line-level pass.
_MONEY_UNITS = 10_000


class FeatureInputError(DataError, ValueError):
    """The validated events a snapshot needs are missing or malformed."""


class FeatureInputPending(FeatureInputError):
    """Only the latest day a snapshot needs is missing: its ingest may still be running (retried)."""

    retryable = True


# -- pure DataFrame functions -------------------------------------------------------------


def product_events(events: DataFrame) -> DataFrame:
    """The events features are built from: known customers' product lines."""
    missing = [c for c in (*EVENT_COLUMNS, "line_kind") if c not in events.columns]
    if missing:
        raise FeatureInputError(f"validated events lack column(s) {missing}; got {events.columns}")
    return events.where(F.col("customer_id").isNotNull() & (F.col("line_kind") == "product")).select(
        *EVENT_COLUMNS
    )


def as_of_frame(spark: SparkSession, as_of_dates: Sequence[dt.date]) -> DataFrame:
    """One row per snapshot date: ``as_of`` (date) and ``as_of_ts`` (its midnight UTC)."""
    dates = sorted(set(as_of_dates))
    if not dates:
        raise ValueError("no as_of dates given")
    # From Arrow, not a list of tuples: a list goes through pickling and costs seconds per job.
    column = pa.table({"as_of": pa.array(dates, pa.date32())})
    frame = spark.createDataFrame(column.cast(pa.schema([pa.field("as_of", pa.date32(), nullable=False)])))
    # The session time zone is UTC (spark.py), so the cast is midnight UTC.
    return frame.withColumn("as_of_ts", F.col("as_of").cast("timestamp"))


def orders(events: DataFrame) -> DataFrame:
    """One row per (customer, order, direction): time, absolute value and the country seen.

    Also ``prev_time``, the previous purchase order's time for purchases, so gaps between
    consecutive orders are computed once, whatever the snapshot dates.
    """
    from pyspark.sql.window import Window

    # Country is a grouping key of the line-level pass, not an aggregate: a string max would
    # make Spark sort every line (no hash aggregation over string buffers), while as a key it
    # hashes, and the string max runs over the few rows left per order.
    parts = events.groupBy("customer_id", "order_id", "is_return", "country").agg(
        F.min("event_time").alias("order_time"),
        F.sum(money_units(F.col("amount"))).alias("value"),
    )
    # One shuffle by customer serves every later step: orders, gaps and the per-snapshot
    # aggregation are all per customer, so Spark adds no exchange after this one.
    per_order = (
        parts.repartition("customer_id")
        .groupBy("customer_id", "order_id", "is_return")
        .agg(
            F.min("order_time").alias("order_time"),
            # The sum of per-country sums: integers, so the same exact value.
            F.abs(F.sum("value")).alias("value"),
            F.max("country").alias("country"),
        )
    )
    by_customer = Window.partitionBy("customer_id", "is_return").orderBy("order_time", "order_id")
    return per_order.withColumn("prev_time", F.lag("order_time").over(by_customer))


def money_units(amount: Column) -> Column:
    """An amount as whole units of 0.0001, exactly as a decimal cast rounds it: the amount's
    shortest decimal form, rounded half away from zero to 4 decimals.

    Computed in double arithmetic, which agrees with that everywhere except within rounding
    error of a half unit. Those lines (amounts with a fifth decimal at or near 5, none in the
    real data) take Spark's decimal cast instead, so the fast path never decides a tie.
    """
    scaled = amount * _MONEY_UNITS
    size = F.abs(scaled)
    fast = F.when(scaled >= 0, F.floor(scaled + 0.5)).otherwise(-F.floor(0.5 - scaled))
    # The double's distance from its shortest decimal form plus the product's rounding: < 4.5e-16 x.
    near_half = F.abs(size - F.floor(size) - 0.5) <= size * 4.5e-16 + 1e-9
    exact = (amount.cast("decimal(22,4)") * _MONEY_UNITS).cast("long")
    return F.when(near_half, exact).otherwise(fast).cast("long")


def _money(units: str | Column) -> Column:
    """Summed units as the double nearest their exact decimal value (both operands are exact)."""
    col = F.col(units) if isinstance(units, str) else units
    return col.cast("double") / float(_MONEY_UNITS)


def _in_window(age_s: Column, days: int, after_days: int = 0) -> Column:
    """Event age (seconds before the snapshot) within ``(after_days, days]`` days."""
    return (age_s > after_days * _DAY_S) & (age_s <= days * _DAY_S)


def customer_features(
    events: DataFrame,
    as_of_dates: Sequence[dt.date],
    *,
    history_days: int = 730,
    home_countries: Sequence[str] = (),
) -> DataFrame:
    """Snapshot rows (``as_of`` + :data:`SNAPSHOT_SCHEMA` columns) for every date, in one pass.

    ``events`` are validated events (:func:`product_events` is applied here). A snapshot
    only sees events in ``[as_of - history_days, as_of)``.
    """
    if not ACTIVE_DAYS <= history_days <= _MAX_HISTORY_DAYS:
        raise ValueError(
            f"history_days={history_days} must cover the {ACTIVE_DAYS}-day activity window and stay "
            f"under {_MAX_HISTORY_DAYS} (gap statistics are exact long sums)"
        )
    lines = product_events(events)
    spark = lines.sparkSession
    dates = F.broadcast(as_of_frame(spark, as_of_dates))
    history = F.expr(f"INTERVAL {history_days} DAYS")

    o = orders(lines)
    # Each order joins every snapshot that can see it: strictly before as_of, within history.
    seen = o.join(dates, (o.order_time < dates.as_of_ts) & (o.order_time >= dates.as_of_ts - history))
    age_s = F.col("as_of_ts").cast("long") - F.col("order_time").cast("long")
    buy = ~F.col("is_return")
    # A gap counts when both of its orders are inside this snapshot's history.
    gap_ok = buy & F.col("prev_time").isNotNull() & (F.col("prev_time") >= F.col("as_of_ts") - history)
    gap_s = F.col("order_time").cast("long") - F.col("prev_time").cast("long")

    aggs = [
        F.max(F.when(buy, F.col("order_time"))).alias("last_order"),
        F.min(F.when(buy, F.col("order_time"))).alias("first_order"),
        F.sum(F.when(gap_ok, 1).otherwise(0)).alias("n_gaps"),
        F.sum(F.when(gap_ok, gap_s).otherwise(0)).alias("sum_gap"),
        # A long is exact: the gaps are positive and inside the history, so the sum of their
        # squares is at most (history_days * 86,400)^2 (4e15 for two years; a long holds 9.2e18).
        F.sum(F.when(gap_ok, gap_s * gap_s).otherwise(0)).alias("sum_gap2"),
        F.sum(F.when(~buy & _in_window(age_s, 90), F.col("value")).otherwise(0)).alias("returned_90d"),
        F.sum(F.when(buy & _in_window(age_s, 60, 30), F.col("value")).otherwise(0)).alias("spend_prev_30d"),
        # Latest known country: max over (time, country) structs is deterministic on ties.
        F.max(F.when(F.col("country").isNotNull(), F.struct("order_time", "country"))).alias("latest"),
    ]
    aggs.append(F.countDistinct(F.when(buy, F.to_date("order_time"))).alias("purchase_days"))
    for w in WINDOWS:
        aggs.append(F.sum(F.when(buy & _in_window(age_s, w), 1).otherwise(0)).alias(f"orders_{w}d"))
        aggs.append(
            F.sum(F.when(buy & _in_window(age_s, w), F.col("value")).otherwise(0)).alias(f"money_{w}d")
        )
    per = (
        seen.groupBy("customer_id", "as_of", "as_of_ts").agg(*aggs).where(F.col(f"orders_{ACTIVE_DAYS}d") > 0)
    )

    # Only lines inside some snapshot's 90-day window (a third of a year's lines for one date):
    # the time range is pushed down to the Parquet reader, which skips the row groups (here
    # whole daily files) whose statistics lie outside it.
    first, last = min(as_of_dates), max(as_of_dates)
    recent = (F.col("event_time") >= utc_midnight(first - dt.timedelta(days=90))) & (
        F.col("event_time") < utc_midnight(last)
    )
    items = lines.where(~F.col("is_return") & F.col("item_id").isNotNull() & recent).select(
        "customer_id", "item_id", F.to_date("event_time").alias("day")
    )
    # No distinct (customer, item, day) first: most lines are distinct anyway, so that extra
    # shuffle of nearly every line cost more than it saved; the count's own partial
    # aggregation removes the duplicates.
    items = (
        items.join(dates, (items.day < dates.as_of) & (items.day >= F.date_sub(dates.as_of, 90)))
        .groupBy("customer_id", "as_of")
        .agg(F.countDistinct("item_id").alias("distinct_items_90d"))
    )
    per = per.join(items, ["customer_id", "as_of"], "left")

    spend = {w: _money(f"money_{w}d") for w in WINDOWS}
    n_gaps = F.col("n_gaps")
    # Population variance from exact integer sums: (n * sum(g^2) - sum(g)^2) / n^2.
    var_num = (
        n_gaps.cast("decimal(38,0)") * F.col("sum_gap2")
        - F.col("sum_gap").cast("decimal(38,0)") * F.col("sum_gap")
    ).cast("double")
    country = F.col("latest.country")
    home = list(home_countries)
    out = per.select(
        "as_of",
        F.col("customer_id").alias(ENTITY_KEY),
        F.col("as_of_ts").alias(TIMESTAMP),
        F.datediff("as_of", F.to_date("last_order")).cast("long").alias("recency_days"),
        F.datediff(F.to_date("last_order"), F.to_date("first_order")).cast("long").alias("tenure_days"),
        F.datediff("as_of", F.to_date("first_order")).cast("long").alias("days_since_first_order"),
        *(F.col(f"orders_{w}d").cast("long").alias(f"orders_{w}d") for w in WINDOWS),
        *(spend[w].alias(f"spend_{w}d") for w in WINDOWS),
        F.when(F.col("orders_90d") > 0, spend[90] / F.col("orders_90d")).otherwise(0.0).alias("aov_90d"),
        F.coalesce(F.col("distinct_items_90d"), F.lit(0)).cast("long").alias("distinct_items_90d"),
        F.when(
            F.col("money_90d") + F.col("returned_90d") > 0,
            _money("returned_90d") / _money(F.col("money_90d") + F.col("returned_90d")),
        )
        .otherwise(0.0)
        .alias("return_rate_90d"),
        F.when(n_gaps > 0, F.col("sum_gap") / n_gaps / _DAY_S).alias("mean_days_between_orders"),
        F.when(n_gaps > 0, F.sqrt(F.greatest(var_num, F.lit(0.0))) / n_gaps / _DAY_S).alias(
            "std_days_between_orders"
        ),
        (
            F.log1p(F.greatest(spend[30], F.lit(0.0)))
            - F.log1p(F.greatest(_money("spend_prev_30d"), F.lit(0.0)))
        ).alias("spend_trend_30d"),
        F.when(country.isNull(), F.lit(None).cast("double"))
        .when(country.isin(home) if home else F.lit(False), 1.0)
        .otherwise(0.0)
        .alias("is_home_country"),
        country.alias("country"),
        F.col("purchase_days").cast("long").alias("purchase_days"),
        F.when(
            (n_gaps > 0) & (F.col("sum_gap") > 0),
            F.datediff("as_of", F.to_date("last_order")) / (F.col("sum_gap") / n_gaps / _DAY_S),
        ).alias("recency_gap_ratio"),
    )
    return out


def with_btyd(snapshot: pa.Table) -> pa.Table:
    """``bgnbd_p_alive`` and ``bgnbd_expected_30d``: BG/NBD fitted on this snapshot's own rows
    (only events before its date went into them), null when the fit does not converge."""
    import numpy as np

    from propensity.core.btyd import WEEK_DAYS, fit_bgnbd

    n = snapshot.num_rows
    alive = expected = pa.nulls(n, pa.float64())
    if n:
        days = snapshot.column("purchase_days").to_numpy(zero_copy_only=False).astype(float)
        x = np.maximum(days - 1, 0.0)
        t_x = snapshot.column("tenure_days").to_numpy(zero_copy_only=False).astype(float) / WEEK_DAYS
        age = (
            snapshot.column("days_since_first_order").to_numpy(zero_copy_only=False).astype(float) / WEEK_DAYS
        )
        try:
            model = fit_bgnbd(x, t_x, age)
            # Overflow of the hypergeometric term on a degenerate fit: null, not inf.
            values = (
                model.p_alive(x, t_x, age),
                model.expected_purchases(BTYD_HORIZON_DAYS / WEEK_DAYS, x, t_x, age),
            )
            alive, expected = (pa.array(v, pa.float64(), mask=~np.isfinite(v)) for v in values)
        except ValueError as exc:
            log.warning("BG/NBD features null for a snapshot of %d customers: %s", n, exc)
    return snapshot.append_column("bgnbd_p_alive", alive).append_column("bgnbd_expected_30d", expected)


# -- the job: validated partitions in, one offline partition per date out ------------------


def validated_days_needed(
    store: Store, as_of_dates: Sequence[dt.date], history_days: int
) -> tuple[list[dt.date], dt.date, dt.date]:
    """(validated partitions to read, first day, last day) for these snapshots.

    Every day from the first validated partition (or the history start, if later) to the day
    before the latest snapshot must be present: a missing day would silently drop its orders.
    """
    available = set(list_partitions(store, *VALIDATED_EVENTS))
    if not available:
        raise FeatureInputError(f"no validated partitions under {store.uri_of(*VALIDATED_EVENTS)}")
    start = max(min(as_of_dates) - dt.timedelta(days=history_days), min(available))
    end = max(as_of_dates) - dt.timedelta(days=1)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    missing = [d for d in days if d not in available]
    if end < min(available):
        raise FeatureInputError(
            f"no validated events before {max(as_of_dates)}: validated data under "
            f"{store.uri_of(*VALIDATED_EVENTS)} starts on {min(available)}; a snapshot as of "
            f"{max(as_of_dates)} would hold no customer"
        )
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:5])
        pending = missing == [end] and end == max(available) + dt.timedelta(days=1)
        raise (FeatureInputPending if pending else FeatureInputError)(
            f"{len(missing)} validated partition(s) missing under {store.uri_of(*VALIDATED_EVENTS)} "
            f"(e.g. date={shown}): snapshots as of {min(as_of_dates)}..{max(as_of_dates)} need every day "
            f"from {start} to {end}; validate those days first"
        )
    return days, start, end


def read_validated(
    spark: SparkSession, store: Store, days: Sequence[dt.date], *, via_arrow: bool | None = None
) -> DataFrame:
    """Validated events of ``days`` as a Spark DataFrame (only the columns features use).

    Local zones are read by Spark itself, as on a cluster, given the explicit file list and the
    schema: Spark then neither runs a job to list the files nor opens footers to infer a
    schema (with ~370 daily files a year, those jobs cost more than reading the rows). S3 zones go through
    Arrow (``via_arrow`` forces either path), because Spark here has no s3a connector (Maven
    is unreachable for hadoop-aws). Both paths give the same rows, so the same snapshot bytes.
    """
    cols = [*EVENT_COLUMNS, "line_kind"]
    if (not store.is_local) if via_arrow is None else via_arrow:
        tables = [read_partition(store, *VALIDATED_EVENTS, d).select(cols) for d in days]
        table = pa.concat_tables(tables, promote_options="permissive")
        # PySpark 4 stops reading an Arrow stream at an empty batch that follows data, silently
        # dropping every later day: days without events are empty partitions, so drop their chunks.
        batches = [b for b in table.to_batches() if b.num_rows]
        return spark.createDataFrame(pa.Table.from_batches(batches, schema=table.schema))
    paths = [store.path(*partition_parts(*VALIDATED_EVENTS, d), PART_FILE) for d in days]
    schema = pq.read_schema(paths[-1])
    spark_schema = from_arrow_schema(pa.schema([schema.field(c) for c in cols]))
    # Past 32 paths Spark lists them in a job of one task per file; the driver lists local
    # files in milliseconds. The listing happens here, when the reader resolves the paths.
    previous = spark.conf.get(_LISTING_THRESHOLD)
    spark.conf.set(_LISTING_THRESHOLD, str(max(len(paths) + 1, int(previous or 32))))
    try:
        return spark.read.schema(spark_schema).parquet(*paths).select(*cols)
    finally:
        spark.conf.set(_LISTING_THRESHOLD, previous)


def to_snapshots(features: DataFrame) -> dict[dt.date, pa.Table]:
    """Collect snapshot rows into one Arrow table per date, sorted by customer (deterministic bytes)."""
    table = features.toArrow()
    out: dict[dt.date, pa.Table] = {}
    as_of = table.column("as_of")
    for day in sorted(set(as_of.to_pylist())):
        part = table.filter(pc.equal(as_of, pa.scalar(day, as_of.type))).drop_columns(["as_of"])
        part = with_btyd(part.sort_by([(ENTITY_KEY, "ascending")]))
        out[day] = part.select(SNAPSHOT_SCHEMA.names).cast(SNAPSHOT_SCHEMA)
    return out


def compute_features(settings: Settings, as_of_dates: Sequence[dt.date]) -> list[str]:
    """Compute and store the snapshots of ``as_of_dates`` in one Spark pass; returns their URIs.

    Every snapshot is computed before any is written, and each write replaces its partition
    atomically: a failure leaves each date either as it was or complete, and a retry rewrites
    the same bytes.
    """
    from propensity.core.spark import configured_session

    dates = sorted(set(as_of_dates))
    if not dates:
        raise ValueError("compute_features needs at least one as_of date")
    cfg = settings.features
    store = zone_store(settings)
    days, start, end = validated_days_needed(store, dates, cfg.history_days)
    spark = configured_session(settings, "propensity-features")
    log.info(
        "features as of %s..%s (%d dates) from validated %s..%s", dates[0], dates[-1], len(dates), start, end
    )
    on_executors = not store.is_local and settings.spark.zone_io != "driver"
    if on_executors:
        from propensity.features import distributed_io

        events = _read_validated_distributed(spark, store, days, settings)
    else:
        events = read_validated(spark, store, days)
    frame = customer_features(events, dates, history_days=cfg.history_days, home_countries=cfg.home_countries)
    if on_executors:
        # Executors write their dates' partitions; the driver gets (URI, rows) back, never the rows.
        written = distributed_io.write_on_executors(
            frame,
            store,
            *SNAPSHOTS,
            SNAPSHOT_SCHEMA,
            ENTITY_KEY,
            endpoint=settings.s3_endpoint_url,
            region=settings.s3_region,
            partitions=len(dates),
            prepare=with_btyd,
        )
        snapshots = {}
    else:
        written, snapshots = {}, to_snapshots(frame)
    uris = []
    for day in dates:
        if day in written:
            uris.append(written[day][0])
            log.info(
                "snapshot %s: %d customers -> %s (written by an executor)", day, written[day][1], uris[-1]
            )
            continue
        # A date with no active customer still gets an (empty) snapshot: "computed, nobody active".
        table = snapshots.get(day, SNAPSHOT_SCHEMA.empty_table())
        uris.append(write_partition(store, *SNAPSHOTS, day, table))
        log.info("snapshot %s: %d customers -> %s", day, table.num_rows, uris[-1])
    return uris


def _read_validated_distributed(
    spark: SparkSession, store: Store, days: Sequence[dt.date], settings: Settings
) -> DataFrame:
    """``spark.zone_io``: ``executors`` (pyarrow S3 inside mapInArrow) or ``s3a`` (hadoop-aws)."""
    from propensity.features import distributed_io

    cols = [*EVENT_COLUMNS, "line_kind"]
    if settings.spark.zone_io == "s3a":
        return spark.read.parquet(*distributed_io.s3a_paths(store, *VALIDATED_EVENTS, days)).select(*cols)
    last = store.path(*partition_parts(*VALIDATED_EVENTS, days[-1]), PART_FILE)
    schema = pq.read_schema(last, filesystem=store.fs)
    return distributed_io.read_on_executors(
        spark,
        store,
        *VALIDATED_EVENTS,
        days,
        pa.schema([schema.field(c) for c in cols]),
        endpoint=settings.s3_endpoint_url,
        region=settings.s3_region,
    )


def read_snapshot(settings: Settings, as_of: dt.date) -> pa.Table:
    """The stored snapshot of ``as_of`` (FileNotFoundError naming it when absent)."""
    return read_partition(zone_store(settings), *SNAPSHOTS, as_of)


def snapshot_dates(settings: Settings) -> list[dt.date]:
    """Dates with a stored snapshot."""
    return list_partitions(zone_store(settings), *SNAPSHOTS)


def content_hash(table: pa.Table) -> str:
    """SHA-256 of a table's rows sorted by every column: equal content, equal hash."""
    import hashlib
    import io

    ordered = table.sort_by([(c, "ascending") for c in table.column_names])
    buf = io.BytesIO()
    pq.write_table(ordered, buf, compression="none")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def run_dates(
    validated_days: Sequence[str | dt.date], data_interval_end: dt.datetime | None
) -> list[dt.date]:
    """The snapshot dates one ``features`` run computes.

    Asset-triggered: each validated day V makes the snapshot as of V + 1 computable.
    Time-scheduled (and backfill): the snapshot as of the data interval's end.
    """
    if validated_days:
        days = {d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in validated_days}
        return sorted(d + dt.timedelta(days=1) for d in days)
    if data_interval_end is None:
        raise ValueError("a features run needs validated days (asset events) or a data interval")
    end = data_interval_end.astimezone(dt.UTC)
    if end.time() != dt.time(0):
        raise ValueError(f"data interval end {end} is not a UTC midnight: snapshots are per date")
    # A plain date: Spark rejects subclasses such as pendulum.Date.
    return [dt.date(end.year, end.month, end.day)]


def compute_features_for_run(
    settings: Settings, validated_days: Sequence[str | dt.date], data_interval_end: dt.datetime | None
) -> dict[str, list[str]]:
    """:func:`compute_features` for the dates of one DAG run; returns the dates and URIs."""
    dates = run_dates(validated_days, data_interval_end)
    uris = compute_features(settings, dates)
    return {"as_of": [d.isoformat() for d in dates], "uris": uris}

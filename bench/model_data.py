"""Data for bench_model.py: each retailer's events as the pipeline validates them, its snapshots
from the real feature job (Spark, one pass over every cutoff), labels, and the issue's anchors.

The validated events are the source read through the configured mapping
(:func:`propensity.ingest.sources.to_canonical`), then the validation stage's row rules and dedup
(the same thresholds from ``validation:``) applied in pandas: a stand-in for the GE run that keeps
the bench minutes long. Snapshots come from :func:`propensity.features.job.customer_features`
itself, on those events, so they are the snapshots the pipeline would store.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.core.settings import Settings, committed_settings, project_home

EVENT_COLUMNS = ["customer_id", "event_time", "order_id", "item_id", "amount", "is_return", "country"]


@dataclass
class Retailer:
    name: str
    settings: Settings
    events: pd.DataFrame  # validated events with line_kind
    first_day: dt.date
    last_full_day: dt.date  # the last day whose events are complete

    @property
    def test_cutoff(self) -> dt.date:
        """The last fully observed cutoff: ``cutoff + horizon`` is still a day with complete data."""
        return self.last_full_day - dt.timedelta(days=self.settings.features.label_days)


def _source_path(settings: Settings) -> str:
    path = settings.source.path
    return path if os.path.isabs(path) else str(project_home() / path)


def validated_events(settings: Settings, canonical: pd.DataFrame) -> pd.DataFrame:
    """The validation stage's row rules and dedup on canonical rows (what the zone would hold)."""
    v, src = settings.validation, settings.source
    frame = canonical.drop(columns=[c for c in ("_source_file", "_source_row") if c in canonical])
    frame = frame.drop_duplicates(ignore_index=True)
    frame["line_kind"] = np.where(
        frame["item_id"].isin(src.non_product_items).fillna(False), "fee", "product"
    )
    qty = frame["quantity"].astype("float64")
    ret = frame["is_return"].fillna(False).astype(bool)
    product = frame["line_kind"] == "product"
    ok = (
        frame["event_time"].notna()
        & frame["_parse_errors"].isna()
        & frame["order_id"].notna()
        & frame["amount"].notna()
        & frame["is_return"].notna()
        & (qty != 0)
        & (ret | (qty >= 1))
        & (~ret | (qty <= -1))
        & (qty.abs() <= v.max_abs_quantity)
        & (frame["unit_price"] >= 0)
        & (~product | (frame["unit_price"] <= v.max_unit_price))
        & (frame["amount"].abs() <= v.max_abs_amount)
    )
    if src.mapping.item_id:
        ok &= frame["item_id"].notna()
    out = frame.loc[ok.fillna(False).astype(bool), [*EVENT_COLUMNS, "line_kind", "quantity", "unit_price"]]
    out["is_return"] = out["is_return"].astype(bool)
    return out.reset_index(drop=True)


def load_retailer(name: str, settings: Settings) -> Retailer:
    from propensity.ingest import sources

    with open(_source_path(settings), "rb") as fh:
        data = fh.read()
    raw = sources.read_source_bytes(data, settings.source.path, settings.source)
    canonical = sources.to_canonical(raw, settings.source.path, settings.source)
    if "order_id" in canonical and canonical["order_id"].isna().all():
        # A source without order ids: every line is its own purchase (as the ingest stage does).
        canonical["order_id"] = canonical.index.astype(str)
    events = validated_events(settings, canonical)
    times = events["event_time"]
    first, last = times.min().date(), times.max().date()
    return Retailer(name, settings, events, first, last - dt.timedelta(days=1))


def shared_retailer() -> Retailer:
    return load_retailer("online_retail", committed_settings())


def synthetic_retailer(workdir: str) -> Retailer:
    """The second retailer: tests/fixtures/synthetic_retailer.py at its defaults, with its mapping."""
    import sys

    import yaml

    home = project_home()
    sys.path.insert(0, str(home / "tests" / "fixtures"))
    import synthetic_retailer as gen

    path = os.path.join(workdir, "synthetic_retailer.parquet")
    if not os.path.exists(path):
        gen.write(gen.generate(gen.RetailerSpec()), path)
    overlay = yaml.safe_load((home / "tests" / "fixtures" / "synthetic_retailer.yaml").read_text())
    overlay["source"]["path"] = path
    settings = committed_settings(source=overlay["source"], features=overlay.get("features", {}))
    return load_retailer("synthetic_retailer", settings)


# -- snapshots from the real feature job ----------------------------------------------------


def spark_snapshots(retailer: Retailer, cutoffs: list[dt.date]) -> pd.DataFrame:
    """Every cutoff's snapshot from :func:`customer_features` (Spark local), as one frame."""
    import pyarrow as pa

    from propensity.core.spark import spark_session
    from propensity.features.job import customer_features, to_snapshots

    s = retailer.settings
    spark = spark_session(s.spark.master, "bench-model", s.spark.shuffle_partitions, s.spark.driver_memory)
    ev = retailer.events[[*EVENT_COLUMNS, "line_kind"]]
    table = pa.Table.from_pandas(ev, preserve_index=False)
    with tempfile.TemporaryDirectory() as tmp:
        # Through Parquet, as the job reads the zone (Arrow -> Spark directly is slow in PySpark).
        import pyarrow.parquet as pq

        pq.write_table(table, os.path.join(tmp, "events.parquet"))
        events = spark.read.parquet(os.path.join(tmp, "events.parquet"))
        frame = customer_features(
            events,
            cutoffs,
            history_days=s.features.history_days,
            home_countries=s.features.home_countries,
        )
        snaps = to_snapshots(frame)
    parts = []
    for day, snap in snaps.items():
        part = snap.to_pandas()
        part.insert(1, "cutoff", day)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True).drop(columns=["event_timestamp"])
    return out


def purchases(retailer: Retailer) -> pd.DataFrame:
    """Orders of the label and the anchors: non-return product lines, quantity > 0 and price > 0."""
    ev = retailer.events
    buy = ev[
        (ev["line_kind"] == "product") & ~ev["is_return"] & (ev["quantity"] > 0) & (ev["unit_price"] > 0)
    ]
    orders = (
        buy.groupby(["customer_id", "order_id"], observed=True)
        .agg(time=("event_time", "min"), value=("amount", "sum"))
        .reset_index()
    )
    orders["day"] = orders["time"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return orders


def labels(orders: pd.DataFrame, customers: pd.Series, cutoff: dt.date, horizon: int) -> np.ndarray:
    c = pd.Timestamp(cutoff)
    window = orders[(orders["day"] >= c) & (orders["day"] < c + pd.Timedelta(days=horizon))]
    return customers.isin(set(window["customer_id"])).to_numpy().astype(int)


def rfm_frame(orders: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    """The issue's 12 RFM columns per customer at ``cutoff`` (orders before it), recency <= 365."""
    c = pd.Timestamp(cutoff)
    hist = orders[orders["day"] < c]
    g = hist.groupby("customer_id")
    out = pd.DataFrame(
        {
            "rfm_recency": (c - g["day"].max()).dt.days,
            "rfm_tenure": (c - g["day"].min()).dt.days,
            "rfm_orders": g.size(),
            "rfm_spend": g["value"].sum(),
        }
    )
    for w in (7, 30, 90, 180):
        gw = hist[hist["day"] >= c - pd.Timedelta(days=w)].groupby("customer_id")
        out[f"rfm_orders_{w}d"] = gw.size()
        out[f"rfm_spend_{w}d"] = gw["value"].sum()
    out = out.fillna(0.0)
    out = out[out["rfm_recency"] <= 365]
    out.index.name = "customer_id"
    return out.reset_index()


def btyd_frame(orders: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    """BG/NBD inputs at ``cutoff`` from distinct purchase days before it (weeks)."""
    c = pd.Timestamp(cutoff)
    days = orders.loc[orders["day"] < c, ["customer_id", "day"]].drop_duplicates()
    g = days.groupby("customer_id")["day"]
    first, last, n = g.min(), g.max(), g.size()
    return pd.DataFrame(
        {
            "frequency": (n - 1).astype(float),
            "recency": (last - first).dt.days / 7.0,
            "T": (c - first).dt.days / 7.0,
        }
    ).rename_axis("customer_id")

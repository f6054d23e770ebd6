"""Synthetic feature snapshots and champions for the batch tests and bench (fast for 1 M rows).

Shared by the unit and integration tests (tests/support is on sys.path) and bench/bench_batch.py.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import xgboost as xgb

from propensity.features.spec import INT_FEATURES, MODEL_FEATURES, SNAPSHOT_SCHEMA, matrix

DAY = dt.date(2011, 12, 1)


def synthetic_snapshot(n: int, as_of: dt.date = DAY, seed: int = 0, prefix: str = "c") -> pa.Table:
    """``n`` active customers as the feature job stores them (SNAPSHOT_SCHEMA), with missing gaps."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for name in MODEL_FEATURES:
        if name in INT_FEATURES:
            cols[name] = pa.array(rng.integers(0, 365, n), pa.int64())
        elif name == "is_home_country":
            cols[name] = pa.array((rng.random(n) < 0.8).astype(np.float64))
        else:
            values = rng.gamma(2.0, 40.0, n)
            # One-order customers have no gap statistics: null, as in the real snapshots.
            mask = rng.random(n) < 0.2 if "between_orders" in name else None
            cols[name] = pa.array(values, pa.float64(), mask=mask)
    ts = dt.datetime.combine(as_of, dt.time(0), tzinfo=dt.UTC)
    ids = pa.array([f"{prefix}{i:07d}" for i in range(n)], pa.string())
    table = pa.table(
        {
            "customer_id": ids,
            "event_timestamp": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
            **cols,
            "country": pa.array(np.where(rng.random(n) < 0.8, "United Kingdom", "France")),
        }
    )
    return table.select(SNAPSHOT_SCHEMA.names).cast(SNAPSHOT_SCHEMA)


def train_champion(
    seed: int = 0, rows: int = 2000, rounds: int = 30, params: dict | None = None
) -> xgb.Booster:
    """A binary:logistic model over MODEL_FEATURES whose label depends on recency and frequency."""
    frame = synthetic_snapshot(rows, seed=seed + 100).to_pandas()
    rng = np.random.default_rng(seed)
    logit = 1.0 - frame["recency_days"] / 90 + 0.02 * frame["orders_90d"] + rng.normal(0, 0.7, rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    dtrain = xgb.DMatrix(matrix(frame, MODEL_FEATURES), label=y, feature_names=list(MODEL_FEATURES))
    base = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train(params or base, dtrain, num_boost_round=rounds)

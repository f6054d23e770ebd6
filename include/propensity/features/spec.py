"""The feature contract, without Spark: which features a snapshot holds, in which order the model
takes them, the entity key, and the Feast names. Training, serving, batch scoring and the Feast repo
all import these names from here, so importing the API never imports Spark.

Snapshot convention: the snapshot ``as_of`` D holds one row per customer who placed at least one
order (a non-return product line) in the 365 days before D, computed only from events with
``event_time < D 00:00 UTC``; its ``event_timestamp`` is D 00:00 UTC.

Feature definitions (windows are ``[D - w days, D)``; "order" = a distinct non-return order):

* ``recency_days``: whole days from the last order's UTC date to D.
* ``tenure_days``: whole days from the first to the last order (history window).
* ``days_since_first_order``: whole days from the first order's date to D (history window).
* ``orders_{7,30,90,365}d``, ``spend_{7,30,90,365}d``: order count and gross order value.
* ``aov_90d``: ``spend_90d / orders_90d``; 0 when no order in 90 days.
* ``distinct_items_90d``: distinct items bought in 90 days.
* ``return_rate_90d``: returned value / (bought + returned value) in 90 days, in [0, 1]; 0 with neither.
* ``mean_days_between_orders``, ``std_days_between_orders``: mean and population standard
  deviation of the gaps (fractional days) between consecutive orders; null with one order.
* ``spend_trend_30d``: ``ln(1 + spend_30d) - ln(1 + spend of the 30 days before)``: defined for
  zero spend, symmetric for growth and decline.
* ``purchase_days``: distinct UTC dates with an order (history window).
* ``recency_gap_ratio``: ``recency_days / mean_days_between_orders``: how overdue the customer
  is against their own rhythm; null with one order.
* ``bgnbd_p_alive``, ``bgnbd_expected_30d``: BG/NBD (:mod:`propensity.core.btyd`) fitted on the
  snapshot's own rows (frequency = ``purchase_days - 1``, recency = ``tenure_days``, age =
  ``days_since_first_order``, in weeks): P(alive) and expected purchases in the next 30 days.
  Only the snapshot's rows go in, so only events before D; null when the fit does not converge.
* ``is_home_country``: 1 when the customer's latest country is one of ``features.home_countries``,
  0 when another, null when the source has no country. ``country`` itself is kept in the
  snapshot (not a model input) for evaluation segments.

Money is summed exactly, as integers of 0.0001 (each line's amount rounded half away from zero
to 4 decimals, as a decimal cast would: :func:`propensity.features.job.money_units`), and gap statistics from exact
integer sums, so a snapshot is bit-identical whether computed alone or with many other dates in
one pass (bootstrap). Spend is the integer sum over 10,000 as a double: the double nearest the
exact decimal sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"
WINDOWS = (7, 30, 90, 365)
BTYD_HORIZON_DAYS = 30
ACTIVE_DAYS = 365

INT_FEATURES = (
    "recency_days",
    "tenure_days",
    "days_since_first_order",
    *(f"orders_{w}d" for w in WINDOWS),
    "distinct_items_90d",
    "purchase_days",
)
FLOAT_FEATURES = (
    *(f"spend_{w}d" for w in WINDOWS),
    "aov_90d",
    "return_rate_90d",
    "mean_days_between_orders",
    "std_days_between_orders",
    "spend_trend_30d",
    "is_home_country",
    "recency_gap_ratio",
    "bgnbd_p_alive",
    "bgnbd_expected_30d",
)
# The model's inputs, in the order every consumer (training, serving, batch) must use.
MODEL_FEATURES: tuple[str, ...] = (
    "recency_days",
    "tenure_days",
    "days_since_first_order",
    "orders_7d",
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "spend_365d",
    "aov_90d",
    "distinct_items_90d",
    "return_rate_90d",
    "mean_days_between_orders",
    "std_days_between_orders",
    "spend_trend_30d",
    "is_home_country",
    # Issue 19: BTYD quantities and rhythm. Decayed order counts and spend were tried and lost on
    # both retailers (bench/RESULTS.md, the ablation), so the job does not compute them.
    "purchase_days",
    "recency_gap_ratio",
    "bgnbd_p_alive",
    "bgnbd_expected_30d",
)
SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field(ENTITY_KEY, pa.string(), nullable=False),
        pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
        *(pa.field(c, pa.int64() if c in INT_FEATURES else pa.float64()) for c in MODEL_FEATURES),
        pa.field("country", pa.string()),
    ]
)

# Feast: one entity, one feature view over the snapshots, and one versioned FeatureService per
# model (feature_repo/ defines them with these names).
ENTITY = "customer"
FEATURE_VIEW = "customer_features"
FEATURE_SERVICE = "propensity_v1"


def matrix(frame: Any, features: tuple[str, ...]) -> np.ndarray:
    """The model input from a pandas frame: float32 in feature order, NaN for missing (XGBoost
    and FIL both read NaN as missing). Training, the API's checks and batch scoring all build
    their inputs with it, so they see identical numbers."""
    return frame.loc[:, list(features)].to_numpy(dtype=np.float32, na_value=np.nan)

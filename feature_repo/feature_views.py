"""Feature views: the customer snapshot, typed column by column from the job's schema."""

from __future__ import annotations

from datetime import timedelta

from data_sources import customer_features_source
from entities import customer
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

from propensity.features.spec import INT_FEATURES, MODEL_FEATURES
from propensity.features.store import active_settings

customer_features = FeatureView(
    name="customer_features",
    entities=[customer],
    # A snapshot answers point-in-time lookups until the next one is due; older is stale.
    ttl=timedelta(days=active_settings().features.ttl_days),
    schema=[
        *(Field(name=name, dtype=Int64 if name in INT_FEATURES else Float64) for name in MODEL_FEATURES),
        Field(name="country", dtype=String),
    ],
    source=customer_features_source,
    online=True,
    tags={"owner": "propensity", "stage": "features"},
)

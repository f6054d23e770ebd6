"""Feature services: one versioned service per model. A new feature set is a new version."""

from __future__ import annotations

from feast import FeatureService
from feature_views import customer_features

from propensity.features.spec import FEATURE_SERVICE

# The model features plus country (for evaluation segments and request logs, not a model input).
propensity_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[customer_features],
    description="Purchase propensity model v1: propensity.features.spec.MODEL_FEATURES + country.",
)

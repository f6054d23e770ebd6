"""Fixtures for the serving unit tests."""

from __future__ import annotations

import pytest
import xgboost as xgb
from serving_models import train_booster


@pytest.fixture
def booster() -> xgb.Booster:
    return train_booster(seed=0)


@pytest.fixture
def booster_b() -> xgb.Booster:
    return train_booster(seed=1)

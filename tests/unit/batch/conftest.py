"""Fixtures for the batch tests: a stored snapshot, a deployed champion, a SQLite predictions DB."""

from __future__ import annotations

import pyarrow as pa
import pytest
import xgboost as xgb
from batch_data import DAY, synthetic_snapshot, train_champion

from propensity.core.settings import Settings
from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, zone_store


@pytest.fixture
def batch_settings(make_settings, tmp_path) -> Settings:
    # Two partitions on the local[1] session: staging per partition is exercised, one at a time.
    return make_settings(
        serving={"repository": str(tmp_path / "models")},
        batch={"db_url": f"sqlite:///{tmp_path}/predictions.db", "partitions": 2, "arrow_batch_rows": 64},
    )


@pytest.fixture
def snapshot(batch_settings) -> pa.Table:
    table = synthetic_snapshot(300, DAY)
    write_partition(zone_store(batch_settings), *SNAPSHOTS, DAY, table)
    return table


@pytest.fixture
def champion() -> xgb.Booster:
    return train_champion(seed=0)


@pytest.fixture
def challenger() -> xgb.Booster:
    return train_champion(seed=1)

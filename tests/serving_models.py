"""Helpers for the serving tests: small synthetic XGBoost models and a port with no listener.

Importable from any test folder: pytest puts tests/ (home of the root conftest) on sys.path.
"""

from __future__ import annotations

import socket

import numpy as np
import xgboost as xgb

FEATURES = ["recency_days", "frequency_90d", "monetary_90d", "tenure_days", "returns_ratio"]


def train_booster(seed: int = 0, rows: int = 300, features: list[str] | None = None) -> xgb.Booster:
    """A binary:logistic model on random rows whose label depends on two features."""
    names = features or FEATURES
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(names))).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    dtrain = xgb.DMatrix(x, label=y, feature_names=names)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train(params, dtrain, num_boost_round=20)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

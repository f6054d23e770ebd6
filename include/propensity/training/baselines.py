"""Baselines every model is judged against: what people would score customers with without this
pipeline, on exactly the rows the model is evaluated on.

* ``recency`` and ``frequency``: one snapshot column each (recent buyers, frequent buyers).
* ``bgnbd``: the BG/NBD buy-till-you-die model (:mod:`propensity.core.btyd`), fitted on the
  latest training cutoff's snapshot (events before it only; no label), scored as the expected
  number of purchases in the label horizon.
* ``rfm_xgb``: a plain XGBoost on 12 recency/frequency/monetary snapshot columns, trained on the
  model's own training rows with fixed, untuned parameters.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import xgboost as xgb

from propensity.core.btyd import WEEK_DAYS, BgNbd, fit_bgnbd
from propensity.core.cutoffs import CutoffPlan
from propensity.core.settings import TrainingSettings
from propensity.features.spec import matrix

log = logging.getLogger(__name__)

__all__ = ["BgNbd", "all_baseline_scores", "baseline_scores", "bgnbd_scores", "fit_bgnbd", "rfm_xgb_scores"]
# The plain XGBoost baseline: 12 RFM snapshot columns (recency, tenure, counts and spend over
# the windows) and the parameters a user would pick without tuning.
RFM_COLUMNS = (
    "recency_days",
    "days_since_first_order",
    "orders_365d",
    "spend_365d",
    "orders_7d",
    "orders_30d",
    "orders_90d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "tenure_days",
    "aov_90d",
)
RFM_XGB_PARAMS = {
    "objective": "binary:logistic",
    "max_depth": 4,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "seed": 0,
}
RFM_XGB_ROUNDS = 300


def baseline_scores(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Single-feature scores people would use without a model: recent buyers and frequent buyers."""
    return {
        "recency": -frame["recency_days"].to_numpy(dtype=float),
        "frequency": frame["orders_365d"].to_numpy(dtype=float),
    }


def all_baseline_scores(
    frame: pd.DataFrame, plan: CutoffPlan, evaluation: pd.DataFrame, cfg: TrainingSettings
) -> dict[str, np.ndarray]:
    """Every baseline's scores on ``evaluation``'s rows, fitted on the training cutoffs only."""
    out = baseline_scores(evaluation)
    matured = [*plan.train, *plan.valid]
    try:
        out["bgnbd"] = bgnbd_scores(
            frame[frame["cutoff"] == max(matured)], evaluation, cfg.label_horizon_days
        )
    except ValueError as exc:  # the gate names a baseline it could not score
        log.warning("BG/NBD baseline not scored: %s", exc)
        out["bgnbd"] = np.full(len(evaluation), np.nan)
    out["rfm_xgb"] = rfm_xgb_scores(frame[frame["cutoff"].isin(matured)], evaluation)
    return out


def bgnbd_scores(history: pd.DataFrame, evaluation: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """BG/NBD fitted on ``history``'s rows (a training cutoff's snapshot: events before it only),
    scored as expected purchases in the horizon for each evaluation row."""
    model = fit_bgnbd(*btyd_inputs(history))
    return model.expected_purchases(horizon_days / WEEK_DAYS, *btyd_inputs(evaluation))


def btyd_inputs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) in weeks from a snapshot: repeat purchase days, first to last
    purchase day, first purchase day to the cutoff (the history window's)."""
    days = frame["purchase_days"].to_numpy(dtype=float)
    tenure = frame["tenure_days"].to_numpy(dtype=float)
    age = frame["days_since_first_order"].to_numpy(dtype=float)
    return np.maximum(days - 1, 0.0), tenure / WEEK_DAYS, age / WEEK_DAYS


def rfm_xgb_scores(train: pd.DataFrame, evaluation: pd.DataFrame) -> np.ndarray:
    """A plain XGBoost on the 12 RFM columns, fixed parameters, trained on ``train``'s rows."""
    cols = list(RFM_COLUMNS)
    dtrain = xgb.DMatrix(matrix(train, RFM_COLUMNS), label=train["label"], feature_names=cols)
    booster = xgb.train(RFM_XGB_PARAMS, dtrain, num_boost_round=RFM_XGB_ROUNDS)
    return booster.inplace_predict(matrix(evaluation, RFM_COLUMNS))

"""Rolling-origin model selection: rounds and hyperparameters chosen on several later cutoffs.

Early stopping on one validation cutoff picks the rounds that suit that week, and on a seasonal
retailer it may never stop. Here every candidate is scored the way it will be used, several
times: for each of the ``folds`` latest matured cutoffs ``v`` (the validation cutoffs), a model
is trained on the cutoffs whose labels had matured by ``v`` (``c + horizon <= v``: what a
training run on day ``v`` could have used) and scored on ``v``'s rows after every round. The
candidate's score is the mean validation AUC over the folds at its best round; that round
count and those parameters are refit on every matured cutoff.

The candidates: the configured ``xgb_params`` first, then Optuna's TPE sampler (seeded) over
depth, learning rate, child weight, row and column sampling and L2, until ``max_trials`` or
the time budget ``budget_s`` runs out (whichever first; with ``max_trials`` reached first the
choice is a function of the data alone).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from propensity.core.settings import SelectionSettings
from propensity.features.spec import matrix

log = logging.getLogger(__name__)


class NoFoldError(ValueError):
    """Too few matured cutoffs for any rolling-origin fold."""


@dataclass
class Fold:
    valid_cutoff: dt.date
    train: xgb.DMatrix
    valid: xgb.DMatrix
    train_cutoffs: int


@dataclass
class Selection:
    params: dict[str, Any]
    rounds: int
    valid_auc: float  # mean over folds at the chosen round
    fold_aucs: list[float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    oof: pd.DataFrame | None = None  # the chosen candidate's validation scores (for calibration)


def cutoff_weights(cutoffs: pd.Series, latest: dt.date, half_life_days: float | None) -> np.ndarray | None:
    """Recency weights of training rows: 1 at the latest cutoff, halving every ``half_life_days``."""
    if not half_life_days:
        return None
    age = np.array([(latest - c).days for c in cutoffs], dtype=float)
    return np.power(0.5, age / float(half_life_days))


def folds(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    cutoffs: list[dt.date],
    horizon_days: int,
    cfg: SelectionSettings,
) -> list[Fold]:
    """The rolling-origin folds over ``cutoffs`` (matured, never the evaluation ones)."""
    cutoffs = sorted(cutoffs)
    out = []
    for v in cutoffs[-cfg.folds :]:
        train_cuts = [c for c in cutoffs if c + dt.timedelta(days=horizon_days) <= v]
        if len(train_cuts) < cfg.min_train_cutoffs:
            continue
        tr = frame[frame["cutoff"].isin(train_cuts)]
        va = frame[frame["cutoff"] == v]
        if tr["label"].nunique() < 2 or va["label"].nunique() < 2:
            continue
        weights = cutoff_weights(tr["cutoff"], max(train_cuts), cfg.half_life_days)
        out.append(
            Fold(
                v,
                xgb.DMatrix(
                    matrix(tr, features), label=tr["label"], weight=weights, feature_names=list(features)
                ),
                xgb.DMatrix(matrix(va, features), label=va["label"], feature_names=list(features)),
                len(train_cuts),
            )
        )
    if not out:
        raise NoFoldError(
            f"no rolling-origin fold: the {cfg.folds} latest of {len(cutoffs)} cutoffs leave fewer than "
            f"{cfg.min_train_cutoffs} matured training cutoffs each"
        )
    return out


def score_candidate(
    params: dict[str, Any], fold_list: list[Fold], max_rounds: int, patience: int
) -> tuple[float, int, list[float], list[xgb.Booster]]:
    """(mean validation AUC at the best round, that round count, per-fold AUCs there, boosters).

    The folds are boosted in lockstep and scored after every round; boosting stops once the mean
    AUC over the folds has not improved for ``patience`` rounds (or at ``max_rounds``)."""
    full = {**params, "eval_metric": "auc"}
    boosters = [xgb.Booster(full, [f.train, f.valid]) for f in fold_list]
    curves: list[list[float]] = [[] for _ in fold_list]
    best_mean, best_round = -np.inf, 0
    for i in range(max_rounds):
        for k, (f, booster) in enumerate(zip(fold_list, boosters, strict=True)):
            booster.update(f.train, i)
            curves[k].append(float(booster.eval_set([(f.valid, "valid")], i).rsplit(":", 1)[1]))
        mean = float(np.mean([c[-1] for c in curves]))
        if mean > best_mean:
            best_mean, best_round = mean, i
        elif i - best_round >= patience:
            break
    return best_mean, best_round + 1, [c[best_round] for c in curves], boosters


def _suggest(trial, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "eta": trial.suggest_float("eta", 0.01, 0.2, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "lambda": trial.suggest_float("lambda", 0.1, 50.0, log=True),
    }


def select(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    cutoffs: list[dt.date],
    base_params: dict[str, Any],
    horizon_days: int,
    cfg: SelectionSettings,
) -> Selection:
    """The rolling-origin choice of parameters and rounds (see the module docstring)."""
    import optuna

    started = time.monotonic()
    fold_list = folds(frame, features, cutoffs, horizon_days, cfg)
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], int, list[float], list[xgb.Booster]] | None = None

    def run(params: dict[str, Any]) -> float:
        nonlocal best
        score, rounds, per_fold, boosters = score_candidate(params, fold_list, cfg.max_rounds, cfg.patience)
        keys = ("max_depth", "eta", "min_child_weight", "subsample", "colsample_bytree", "lambda")
        trials.append(
            {**{k: params.get(k) for k in keys}, "valid_auc": score, "rounds": rounds, "fold_aucs": per_fold}
        )
        if best is None or score > best[0]:
            best = (score, params, rounds, per_fold, boosters)
        return score

    run(dict(base_params))
    if cfg.max_trials > 1:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
        remaining = cfg.budget_s - (time.monotonic() - started)
        if remaining > 0:
            study.optimize(
                lambda t: run(_suggest(t, base_params)), n_trials=cfg.max_trials - 1, timeout=remaining
            )
    assert best is not None
    score, params, rounds, per_fold, boosters = best
    seconds = time.monotonic() - started
    log.info(
        "rolling-origin selection: %d candidates on %d folds (%s) in %.0fs: depth %s eta %.3f, %d rounds, "
        "mean valid AUC %.4f",
        len(trials),
        len(fold_list),
        ", ".join(f.valid_cutoff.isoformat() for f in fold_list),
        seconds,
        params.get("max_depth"),
        params.get("eta"),
        rounds,
        score,
    )
    return Selection(params, rounds, score, per_fold, trials, seconds, _oof(boosters, rounds, fold_list))


def _oof(boosters: list[xgb.Booster], rounds: int, fold_list: list[Fold]) -> pd.DataFrame:
    """The chosen candidate's scores on each fold's validation rows (margin and label)."""
    parts = []
    for f, full in zip(fold_list, boosters, strict=True):
        booster = full[:rounds]
        parts.append(
            pd.DataFrame(
                {
                    "cutoff": f.valid_cutoff,
                    "margin": booster.predict(f.valid, output_margin=True),
                    "label": f.valid.get_label().astype(int),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def refit(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    cutoffs: list[dt.date],
    selection: Selection,
    cfg: SelectionSettings,
) -> xgb.Booster:
    """The chosen parameters and rounds on every given (matured) cutoff."""
    rows = frame[frame["cutoff"].isin(cutoffs)]
    weights = cutoff_weights(rows["cutoff"], max(cutoffs), cfg.half_life_days)
    dtrain = xgb.DMatrix(
        matrix(rows, features), label=rows["label"], weight=weights, feature_names=list(features)
    )
    return xgb.train(selection.params, dtrain, num_boost_round=selection.rounds)

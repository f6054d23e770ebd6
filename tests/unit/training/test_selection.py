"""Rolling-origin selection and the baselines: real XGBoost, real Optuna, BG/NBD on simulated buyers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from test_train_and_gate import synthetic_frame

from propensity.core.btyd import fit_bgnbd
from propensity.core.cutoffs import plan_cutoffs
from propensity.core.settings import SelectionSettings, TrainingSettings
from propensity.features.spec import MODEL_FEATURES
from propensity.training.baselines import all_baseline_scores
from propensity.training.selection import NoFoldError, folds, refit, select


@pytest.fixture(scope="module")
def plan():
    return plan_cutoffs(dt.date(2010, 12, 1), dt.date(2011, 6, 30), TrainingSettings())


@pytest.fixture(scope="module")
def frame(plan):
    return synthetic_frame(plan.all)


def test_each_fold_trains_only_on_cutoffs_matured_by_its_validation_cutoff(plan, frame):
    cutoffs = [*plan.train, *plan.valid]
    cfg = SelectionSettings(folds=3, min_train_cutoffs=2)
    out = folds(frame, MODEL_FEATURES, cutoffs, 30, cfg)
    assert [f.valid_cutoff for f in out] == cutoffs[-3:]
    for f in out:
        matured = [c for c in cutoffs if c + dt.timedelta(days=30) <= f.valid_cutoff]
        assert f.train_cutoffs == len(matured) and f.train.num_row() == 600 * len(matured)
        assert f.valid.num_row() == 600
    with pytest.raises(NoFoldError, match="fewer than 50 matured"):
        folds(frame, MODEL_FEATURES, cutoffs, 30, SelectionSettings(min_train_cutoffs=50))


def test_selection_chooses_rounds_on_the_folds_mean_and_refits_on_every_cutoff(plan, frame):
    cutoffs = [*plan.train, *plan.valid]
    cfg = SelectionSettings(folds=3, max_trials=3, budget_s=600, max_rounds=300, patience=30)
    base = TrainingSettings().xgb_params
    chosen = select(frame, MODEL_FEATURES, cutoffs, base, 30, cfg)
    assert len(chosen.trials) == 3  # the configured params, then two Optuna trials
    assert chosen.trials[0]["max_depth"] == base["max_depth"] and chosen.trials[0]["eta"] == base["eta"]
    assert chosen.valid_auc == max(t["valid_auc"] for t in chosen.trials) > 0.8
    assert chosen.valid_auc == pytest.approx(np.mean(chosen.fold_aucs))
    assert 1 <= chosen.rounds < 300  # the folds' mean AUC stalled: boosting stopped early
    assert sorted(chosen.oof["cutoff"].unique()) == cutoffs[-3:]
    booster = refit(frame, MODEL_FEATURES, cutoffs, chosen, cfg)
    assert booster.num_boosted_rounds() == chosen.rounds
    # Same data, same seed, trial cap reached first: the same choice.
    again = select(frame, MODEL_FEATURES, cutoffs, base, 30, cfg)
    assert (again.rounds, again.params) == (chosen.rounds, chosen.params)


def test_bgnbd_recovers_the_parameters_of_simulated_buyers():
    rng = np.random.default_rng(3)
    n, r, alpha, a, b, T = 4000, 0.5, 4.0, 0.8, 2.5, 52.0
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < p[i]:
                break
    model = fit_bgnbd(x, t_x, np.full(n, T))
    assert model.penalizer == 0.001
    assert model.r == pytest.approx(r, rel=0.25) and model.alpha == pytest.approx(alpha, rel=0.3)
    assert model.a == pytest.approx(a, rel=0.4) and model.b == pytest.approx(b, rel=0.5)
    # P(alive) is 1 without repeat purchases; more (and more recent) purchases, more expected.
    assert model.p_alive(np.array([0.0]), np.array([0.0]), np.array([T]))[0] == 1.0
    e = model.expected_purchases(4.0, np.array([1.0, 5.0, 5.0]), np.array([50.0, 50.0, 10.0]), np.full(3, T))
    assert e[1] > e[0] > 0 and e[1] > e[2]
    with pytest.raises(ValueError, match="recency <= T"):
        fit_bgnbd(np.array([1.0]), np.array([5.0]), np.array([2.0]))


def test_every_baseline_is_scored_on_the_evaluation_rows(plan, frame):
    frame = frame.copy()
    # Consistent BTYD inputs: purchase days, first-to-last and first-to-cutoff days.
    rng = np.random.default_rng(5)
    frame["purchase_days"] = rng.integers(1, 12, len(frame))
    frame["days_since_first_order"] = frame["tenure_days"] + frame["recency_days"]
    evaluation = frame[frame["cutoff"].isin(plan.evaluation)]
    scores = all_baseline_scores(frame, plan, evaluation, TrainingSettings())
    assert sorted(scores) == ["bgnbd", "frequency", "recency", "rfm_xgb"]
    assert all(len(s) == len(evaluation) and np.isfinite(s).all() for s in scores.values())
    from propensity.core.stats import auc

    y = evaluation["label"].to_numpy()
    assert auc(y, scores["rfm_xgb"]) > 0.75  # recency and orders_90d carry the signal

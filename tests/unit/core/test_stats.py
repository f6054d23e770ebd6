"""core.stats: effect sizes and quality metrics in numpy, checked against scipy / scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance
from sklearn.metrics import roc_auc_score

from propensity.core.stats import (
    auc,
    calibration,
    normalised_wasserstein,
    psi,
    psi_categorical,
    wasserstein_sorted,
)


def test_wasserstein_matches_scipy_with_ties_and_unequal_sizes() -> None:
    rng = np.random.default_rng(0)
    a, b = np.round(rng.gamma(1.0, 3.0, 5_000)), np.round(rng.gamma(1.4, 3.0, 3_100))
    assert wasserstein_sorted(np.sort(a), np.sort(b)) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    # Normalised: a 0.5 sd shift of a normal is 0.5.
    x = rng.normal(10, 4, 50_000)
    assert normalised_wasserstein(x, x + 2.0) == pytest.approx(0.5, rel=0.02)


def test_psi_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=50_000)
    assert psi(x, rng.normal(size=50_000)) < 0.005
    # One sd shift of a normal: PSI ~ 1.0 with decile bins (textbook figure ~1).
    assert psi(x, rng.normal(1.0, 1.0, 50_000)) == pytest.approx(1.0, rel=0.2)
    # Two categories 50/50 -> 80/20: sum((c-r) ln(c/r)) = 0.3 ln 1.6 + (-0.3) ln 0.4 = 0.4159
    ref, cur = ["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20
    assert psi_categorical(ref, cur) == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4), rel=1e-9)
    # 60 % zeros: tied quantiles collapse into one bin instead of six empty ones.
    counts = np.concatenate([np.zeros(600), np.arange(1, 401)])
    assert psi(counts, counts) == 0.0
    assert psi(counts, np.concatenate([np.zeros(300), np.arange(1, 701)])) > 0.2


def test_auc_and_calibration_match_references() -> None:
    rng = np.random.default_rng(2)
    s = np.round(rng.random(4_000), 2)  # ties share ranks
    y = (rng.random(4_000) < s).astype(int)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    assert np.isnan(auc(np.ones_like(y), s))
    assert calibration(y, s)["ece"] < 0.03
    # Scores twice the true rate are miscalibrated by about the mean score's half.
    y_half = (rng.random(4_000) < s / 2).astype(int)
    assert calibration(y_half, s)["ece"] == pytest.approx(s.mean() / 2, abs=0.03)

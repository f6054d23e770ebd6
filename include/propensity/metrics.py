"""Model-quality and distribution metrics shared by training, the gate, shadow and drift."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present (undefined, not 0.5)."""
    y = np.asarray(y)
    if y.min(initial=0) == y.max(initial=0) or len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / max(len(y), 1))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": auc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if y.any() else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def fast_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC from ranks: the bootstrap calls this hundreds of times."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_bootstrap_auc_diff(
    y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, samples: int = 500, seed: int = 7
) -> dict[str, float]:
    """Interval of AUC(challenger) - AUC(champion), resampling rows (the same rows for both)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        d = fast_auc(y[idx], challenger[idx]) - fast_auc(y[idx], champion[idx])
        if not np.isnan(d):
            diffs.append(d)
    arr = np.array(diffs)
    return {
        "auc_diff": fast_auc(y, challenger) - fast_auc(y, champion),
        "ci_low": float(np.percentile(arr, 2.5)),
        "ci_high": float(np.percentile(arr, 97.5)),
        "p_challenger_better": float((arr > 0).mean()),
        "samples": float(len(arr)),
    }


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)

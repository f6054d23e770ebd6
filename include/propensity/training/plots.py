"""Plots people would rather look at than numbers: logged to MLflow by the training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_plots(
    folder: Path,
    y: np.ndarray,
    scores: np.ndarray,
    booster: xgb.Booster,
    baselines: dict[str, float],
    evaluation: pd.DataFrame,
    features: tuple[str, ...],
) -> list[Path]:
    """ROC (with baselines), PR, calibration, feature importance and score distribution PNGs."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    from propensity.core.stats import auc
    from propensity.training.baselines import baseline_scores

    plt = _plt()
    out: list[Path] = []

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, scores)
    ax.plot(fpr, tpr, label=f"model (AUC {auc(y, scores):.3f})")
    for name, s in baseline_scores(evaluation).items():
        f, t, _ = roc_curve(y, s)
        ax.plot(f, t, "--", label=f"{name} baseline (AUC {baselines[name]:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, evaluation cutoffs")
    ax.legend(loc="lower right")
    out.append(_save(fig, folder / "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    precision, recall, _ = precision_recall_curve(y, scores)
    ax.plot(recall, precision)
    ax.axhline(y.mean(), ls=":", color="grey", label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    out.append(_save(fig, folder / "pr.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    frac, mean_pred = calibration_curve(y, scores, n_bins=10, strategy="quantile")
    ax.plot(mean_pred, frac, "o-")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration (deciles)")
    out.append(_save(fig, folder / "calibration.png"))

    fig, ax = plt.subplots(figsize=(6, 5))
    gain = booster.get_score(importance_type="total_gain")
    names = sorted(features, key=lambda f: gain.get(f, 0.0))
    ax.barh(names, [gain.get(f, 0.0) for f in names])
    ax.set(xlabel="total gain", title="Feature importance")
    out.append(_save(fig, folder / "feature_importance.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores[y == 0], bins=40, alpha=0.6, density=True, label="did not buy")
    ax.hist(scores[y == 1], bins=40, alpha=0.6, density=True, label="bought")
    ax.set(xlabel="score", ylabel="density", title="Score distribution by outcome")
    ax.legend()
    out.append(_save(fig, folder / "score_distribution.png"))
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path

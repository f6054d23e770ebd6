"""Evaluate a challenger against the champion on the same rows, and run the shadow test.

The verdict is :mod:`propensity.training.gate`'s; nothing here moves an alias
(:mod:`propensity.training.registry` does that).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from propensity.core.settings import TrainingSettings
from propensity.core.stats import auc, paired_bootstrap_auc_diff, psi, rank_correlation


def tenure_bands(edges_days: list[int]) -> list[tuple[int, int, str]]:
    """Tenure bands from their edges in days (``training.tenure_bands_days``, e.g. [90, 270])."""
    edges = sorted(set(int(e) for e in edges_days))
    bounds = [0, *edges, 10**6]
    bands = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        name = f"<{hi}d" if lo == 0 else (f"{lo}d+" if hi == 10**6 else f"{lo}-{hi}d")
        bands.append((lo, hi, name))
    return bands


def segments(frame: pd.DataFrame, tenure_edges_days: list[int] = (90, 270)) -> dict[str, pd.Series]:
    """Key segments as boolean masks over ``frame``: country group, tenure band, spend band.

    Tenure bands come from config: a retailer with a short history sets edges it can evaluate
    (every key segment must be evaluable for a promotion)."""
    out: dict[str, pd.Series] = {}
    if "is_home_country" in frame and frame["is_home_country"].notna().any():
        home = frame["is_home_country"].fillna(0) >= 0.5
        out["country=home"] = home
        out["country=abroad"] = ~home
    tenure = frame["tenure_days"].fillna(0)
    for lo, hi, name in tenure_bands(list(tenure_edges_days)):
        out[f"tenure={name}"] = (tenure >= lo) & (tenure < hi)
    # Spend terciles are cut on the evaluation set itself, so both models see identical segments.
    spend = frame["spend_365d"].fillna(0)
    q1, q2 = np.quantile(spend, [1 / 3, 2 / 3])
    out["spend=low"] = spend <= q1
    out["spend=mid"] = (spend > q1) & (spend <= q2)
    out["spend=high"] = spend > q2
    return out


def compare(
    evaluation: pd.DataFrame,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None,
    cfg: TrainingSettings,
) -> dict[str, Any]:
    """Overall and per-segment AUC of both models on the same rows, plus a paired bootstrap."""
    y = evaluation["label"].to_numpy().astype(int)
    result: dict[str, Any] = {
        "rows": len(y),
        "positives": int(y.sum()),
        "challenger_auc": auc(y, challenger_scores),
        "champion_auc": auc(y, champion_scores) if champion_scores is not None else None,
        "segments": [],
    }
    if champion_scores is not None:
        result["bootstrap"] = paired_bootstrap_auc_diff(
            y, challenger_scores, champion_scores, cfg.bootstrap_samples, cfg.bootstrap_seed
        )
    for name, mask in segments(evaluation, cfg.tenure_bands_days).items():
        m = mask.to_numpy()
        n, pos = int(m.sum()), int(y[m].sum())
        evaluable = n >= cfg.segment_min_size and 0 < pos < n
        seg = {"segment": name, "rows": n, "positives": pos, "evaluable": evaluable}
        if evaluable:
            seg["challenger_auc"] = auc(y[m], challenger_scores[m])
            if champion_scores is not None:
                seg["champion_auc"] = auc(y[m], champion_scores[m])
                seg["auc_drop"] = seg["champion_auc"] - seg["challenger_auc"]
        result["segments"].append(seg)
    return result


def shadow_test(
    challenger: xgb.Booster,
    champion: xgb.Booster | None,
    features: np.ndarray,
    *,
    source: str,
    labels: np.ndarray | None = None,
    latency_sample: int = 200,
) -> dict[str, Any]:
    """Score recent traffic with the challenger beside the champion.

    ``features`` are the rows the champion served (the prediction log) or, before the API has
    logged traffic, the latest snapshot of active customers; ``source`` says which.
    """
    errors = 0
    try:
        chall = challenger.inplace_predict(features)
        errors += int(np.isnan(chall).sum())
    except Exception as exc:  # a model that cannot score traffic fails the shadow test, with the reason
        return {
            "source": source,
            "rows": len(features),
            "errors": len(features),
            "error_rate": 1.0,
            "error": str(exc),
        }
    # Single-request latency: what the API pays per call, measured on the challenger itself,
    # configured as the API serves it (one thread per call; a training booster's OpenMP team
    # on one row waits for every thread, and on a busy machine those waits dominate).
    # The best of three rounds: a neighbour's burst on a shared worker must not fail the model.
    probe = challenger.copy()
    probe.set_param({"nthread": 1})
    sample = features[: min(latency_sample, len(features))]
    rounds = []
    for _ in range(3):
        timings = []
        for row in sample:
            t0 = time.perf_counter()
            probe.inplace_predict(row.reshape(1, -1))
            timings.append((time.perf_counter() - t0) * 1000)
        if timings:
            rounds.append(float(np.percentile(timings, 99)))
    out: dict[str, Any] = {
        "source": source,
        "rows": len(features),
        "errors": errors,
        "error_rate": errors / max(len(features), 1),
        "p99_ms": min(rounds) if rounds else 0.0,
    }
    if champion is not None:
        champ = champion.inplace_predict(features)
        out["psi"] = psi(champ, chall)
        out["rank_corr"] = rank_correlation(champ, chall)
        if labels is not None and len(np.unique(labels)) == 2:
            out["challenger_auc"] = auc(labels, chall)
            out["champion_auc"] = auc(labels, champ)
    return out

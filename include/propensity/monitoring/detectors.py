"""Drift detectors: data, prediction and concept drift as plain dicts (runs in the drift venv).

alibi-detect 0.13 needs numpy<2, so this module is imported only by the drift venv (Airflow's
``@task.external_python``) and by tests that run it there. Inputs and outputs are plain Python
(lists, dicts, floats) so they cross the process boundary as they are.

Large samples make every tiny shift "significant": each per-feature test is paired with an
effect size (PSI over reference quantile bins, Wasserstein-1 over the reference's standard
deviation), and a feature drifts only when both cross their thresholds. The p-values come
from alibi-detect's detectors; the multiple-testing correction is applied once over every
feature of the check, numeric and categorical together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from propensity.core.stats import (
    auc,
    calibration,
    finite,
    psi_categorical,
    psi_from_shares,
    quantile_edges,
    shares,
    wasserstein_scale,
    wasserstein_sorted,
)

log = logging.getLogger(__name__)

# -- multiple testing ---------------------------------------------------------------------


def corrected_threshold(p_values: Sequence[float], p_val: float, correction: str) -> float:
    """The per-feature p-value threshold after the correction over all features of a check.

    Bonferroni: ``p_val / n``. FDR: Benjamini-Hochberg's step-up threshold, computed by
    alibi-detect's own ``fdr`` helper (0 when no test passes).
    """
    p = np.asarray(p_values, dtype=float)
    if p.size <= 1:
        return p_val
    if correction == "bonferroni":
        return p_val / p.size
    if correction == "fdr":
        from alibi_detect.utils.statstest import fdr

        passed, threshold = fdr(p, q_val=p_val)
        return float(threshold) if passed else 0.0
    raise ValueError(f"unknown correction {correction!r}: use 'bonferroni' or 'fdr'")


# -- data drift ---------------------------------------------------------------------------


def _numeric_test(ref: np.ndarray, cur: np.ndarray, test: str) -> tuple[float, float]:
    """(statistic, p-value) of alibi-detect's univariate detector on one feature."""
    from alibi_detect.cd import CVMDrift, KSDrift

    ref2, cur2 = ref.reshape(-1, 1).astype(np.float32), cur.reshape(-1, 1).astype(np.float32)
    if test == "ks":
        detector = KSDrift(ref2, p_val=0.05, input_shape=(1,))
    elif test == "cvm":
        detector = CVMDrift(ref2, p_val=0.05, input_shape=(1,))
    else:
        raise ValueError(f"unknown numeric test {test!r}: use 'ks' or 'cvm'")
    p_vals, stats = detector.score(cur2)
    return float(stats[0]), float(p_vals[0])


def _categorical_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    from alibi_detect.cd import ChiSquareDrift

    cats, codes = np.unique(np.concatenate((ref, cur)), return_inverse=True)
    ref_codes, cur_codes = codes[: ref.size].reshape(-1, 1), codes[ref.size :].reshape(-1, 1)
    detector = ChiSquareDrift(
        ref_codes, p_val=0.05, categories_per_feature={0: list(range(cats.size))}, input_shape=(1,)
    )
    p_vals, stats = detector.score(cur_codes)
    return float(stats[0]), float(p_vals[0])


def data_drift(
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    *,
    categorical: Sequence[str] = (),
    numeric_test: str = "ks",
    correction: str = "bonferroni",
    p_val: float = 0.05,
    effect_size: str = "psi",
    psi_threshold: float = 0.2,
    wasserstein_threshold: float = 0.1,
    bins: int = 10,
) -> dict[str, Any]:
    """Per-feature drift of ``current`` against ``reference`` (column name -> values).

    Features present on both sides are tested; missing values are dropped per feature and
    their share reported (a change in the missing rate shows as ``missing_ref``/``missing_cur``).
    """
    names = [n for n in reference if n in current]
    cat = set(categorical)
    features: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in cat:
            ref = np.asarray(reference[name], dtype=object)
            cur = np.asarray(current[name], dtype=object)
            ref_ok = ref[np.array([v is not None for v in ref], dtype=bool)].astype(str)
            cur_ok = cur[np.array([v is not None for v in cur], dtype=bool)].astype(str)
            stat, p = _categorical_test(ref_ok, cur_ok) if ref_ok.size and cur_ok.size else (0.0, 1.0)
            row = {
                "kind": "categorical",
                "test": "chi2",
                "psi": psi_categorical(ref_ok, cur_ok),
                "wasserstein": None,
            }
        else:
            ref_all = np.asarray(reference[name], dtype=float)
            cur_all = np.asarray(current[name], dtype=float)
            ref_ok = np.sort(ref_all[np.isfinite(ref_all)])
            cur_ok = np.sort(cur_all[np.isfinite(cur_all)])
            stat, p = (
                _numeric_test(ref_ok, cur_ok, numeric_test) if ref_ok.size and cur_ok.size else (0.0, 1.0)
            )
            edges = quantile_edges(ref_ok, bins)
            row = {
                "kind": "numeric",
                "test": numeric_test,
                "psi": psi_from_shares(shares(ref_ok, edges), shares(cur_ok, edges)),
                "wasserstein": wasserstein_sorted(ref_ok, cur_ok) / wasserstein_scale(ref_ok)
                if ref_ok.size and cur_ok.size
                else 0.0,
                "ref_mean": float(ref_ok.mean()) if ref_ok.size else None,
                "cur_mean": float(cur_ok.mean()) if cur_ok.size else None,
            }
        row |= {
            "statistic": stat,
            "p_value": p,
            "n_ref": int(ref_ok.size),
            "n_cur": int(cur_ok.size),
            "missing_ref": 1 - ref_ok.size / max(len(reference[name]), 1),
            "missing_cur": 1 - cur_ok.size / max(len(current[name]), 1),
        }
        features[name] = row

    threshold = corrected_threshold([f["p_value"] for f in features.values()], p_val, correction)
    for row in features.values():
        row["significant"] = row["p_value"] < threshold if threshold > 0 else False
        psi_hit = row["psi"] >= psi_threshold
        wd_hit = row["wasserstein"] is not None and row["wasserstein"] >= wasserstein_threshold
        if effect_size == "psi":
            row["effect_exceeded"] = psi_hit
        elif effect_size == "wasserstein":
            # Categoricals have no distance: PSI stands in for them.
            row["effect_exceeded"] = wd_hit if row["kind"] == "numeric" else psi_hit
        else:
            row["effect_exceeded"] = psi_hit or wd_hit
        row["drifted"] = bool(row["significant"] and row["effect_exceeded"])
    drifted = sorted((n for n, r in features.items() if r["drifted"]), key=lambda n: -features[n]["psi"])
    return {
        "numeric_test": numeric_test,
        "correction": correction,
        "p_val": p_val,
        "threshold": threshold,
        "effect_size": effect_size,
        "psi_threshold": psi_threshold,
        "wasserstein_threshold": wasserstein_threshold,
        "n_features": len(features),
        "features": features,
        "drifted_features": drifted,
    }


# -- prediction drift ---------------------------------------------------------------------


def prediction_drift(
    reference_scores: Sequence[float],
    current_scores: Sequence[float],
    *,
    p_val: float = 0.05,
    psi_threshold: float = 0.2,
    bins: int = 10,
) -> dict[str, Any]:
    """KS test and PSI of the window's scores against the reference's; drift when both cross."""
    ref = np.sort(finite(reference_scores))
    cur = np.sort(finite(current_scores))
    if not ref.size or not cur.size:
        return {"available": False, "drift": False, "n_ref": int(ref.size), "n_cur": int(cur.size)}
    stat, p = _numeric_test(ref, cur, "ks")
    edges = quantile_edges(ref, bins)
    value = psi_from_shares(shares(ref, edges), shares(cur, edges))
    return {
        "available": True,
        "ks_statistic": stat,
        "p_value": p,
        "psi": value,
        "p_val": p_val,
        "psi_threshold": psi_threshold,
        "ref_mean": float(ref.mean()),
        "cur_mean": float(cur.mean()),
        "n_ref": int(ref.size),
        "n_cur": int(cur.size),
        "drift": bool(p < p_val and value >= psi_threshold),
    }


# -- concept drift ------------------------------------------------------------------------


def concept_drift(
    scores: Sequence[float],
    labels: Sequence[int],
    *,
    reference_auc: float | None,
    min_matured: int = 200,
    auc_drop: float = 0.05,
    severe_auc_drop: float = 0.10,
    calibration_error: float = 0.10,
) -> dict[str, Any]:
    """Realised AUC and calibration of matured predictions against the champion's evaluation AUC."""
    n = len(scores)
    out: dict[str, Any] = {"n_matured": n, "reference_auc": reference_auc, "min_matured": min_matured}
    if n < min_matured or reference_auc is None:
        why = f"{n} matured predictions < {min_matured}" if n < min_matured else "no reference AUC"
        return out | {"available": False, "drift": False, "severe": False, "why": why}
    realised = auc(labels, scores)
    cal = calibration(labels, scores)
    if not np.isfinite(realised):
        return out | {"available": False, "drift": False, "severe": False, "why": "one class only"}
    drop = reference_auc - realised
    return out | {
        "available": True,
        "realised_auc": realised,
        "auc_drop": drop,
        "auc_drop_threshold": auc_drop,
        "severe_auc_drop": severe_auc_drop,
        "positive_rate": float(np.mean(labels)),
        "mean_score": float(np.mean(scores)),
        "ece": cal["ece"],
        "ece_threshold": calibration_error,
        "calibration_bins": cal["bins"],
        "auc_drift": bool(drop >= auc_drop),
        "calibration_drift": bool(cal["ece"] >= calibration_error),
        "drift": bool(drop >= auc_drop or cal["ece"] >= calibration_error),
        "severe": bool(drop >= severe_auc_drop),
    }


# -- one check ----------------------------------------------------------------------------


def run_checks(window: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """All three signals for one window; ``params`` is ``DriftSettings.model_dump()``.

    ``window`` keys: ``reference`` (column -> values, with ``score``), ``snapshot`` (the day's
    feature snapshot), ``served`` (served features with ``score``; optional), ``matured``
    (``{"score": [...], "label": [...]}``; optional), ``reference_auc``, ``feature_columns``.
    """
    reference = window["reference"]
    columns = window.get("feature_columns") or [c for c in reference if c not in ("score", "label")]
    ref_features = {c: reference[c] for c in columns if c in reference}
    kw = {
        "categorical": params.get("categorical_features", []),
        "numeric_test": params["numeric_test"],
        "correction": params["correction"],
        "p_val": params["p_val"],
        "effect_size": params["effect_size"],
        "psi_threshold": params["psi_threshold"],
        "wasserstein_threshold": params["wasserstein_threshold"],
        "bins": params["psi_bins"],
    }
    out: dict[str, Any] = {"data": {}}
    for source in ("snapshot", "served"):
        current = window.get(source)
        if current and any(len(v) for v in current.values()):
            out["data"][source] = data_drift(ref_features, current, **kw)
    served = window.get("served") or {}
    out["prediction"] = prediction_drift(
        reference.get("score", []),
        served.get("score", []),
        p_val=params["score_p_val"],
        psi_threshold=params["score_psi_threshold"],
        bins=params["psi_bins"],
    )
    matured = window.get("matured") or {"score": [], "label": []}
    out["concept"] = concept_drift(
        matured["score"],
        matured["label"],
        reference_auc=window.get("reference_auc"),
        min_matured=params["min_matured"],
        auc_drop=params["auc_drop"],
        severe_auc_drop=params["severe_auc_drop"],
        calibration_error=params["calibration_error"],
    )
    return out


def run_checks_from_files(
    manifest: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """:func:`run_checks` on a window staged as Parquet by the main venv (see ``drift_data``).

    A 100k-row window is too big for an XCom; the main venv stages it in the zone and passes
    the URIs, and this side reads them with pyarrow. ``params`` default to the manifest's.
    """
    import pyarrow.parquet as pq

    from propensity.core.storage import open_store

    store = open_store(
        manifest["zone_root"],
        s3_endpoint_url=manifest.get("s3_endpoint_url"),
        s3_region=manifest.get("s3_region", "us-east-1"),
    )
    window: dict[str, Any] = {
        "feature_columns": manifest["feature_columns"],
        "reference_auc": manifest.get("reference_auc"),
    }
    for key, rel in manifest["files"].items():
        with store.fs.open_input_file(store.path(rel)) as fh:
            table = pq.read_table(fh)
        window[key] = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    return run_checks(window, params if params is not None else manifest["params"])

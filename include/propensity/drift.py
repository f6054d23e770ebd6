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

log = logging.getLogger(__name__)

EPS = 1e-4  # floor on a bin's share: an empty bin would make PSI infinite


# -- effect sizes -------------------------------------------------------------------------


def quantile_edges(ref_sorted: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles; ties collapse bins (a 60 % zero mass is one bin)."""
    if ref_sorted.size == 0:
        return np.array([])
    idx = (np.linspace(0, 1, bins + 1)[1:-1] * (ref_sorted.size - 1)).round().astype(int)
    return np.unique(ref_sorted[idx])


def _shares(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Counts per bin from a sorted array: len(edges) binary searches instead of a pass over the data.
    cuts = np.concatenate(([0], np.searchsorted(sorted_values, edges, side="right"), [sorted_values.size]))
    counts = np.diff(cuts).astype(float)
    return np.maximum(counts / max(sorted_values.size, 1), EPS)


def psi_from_shares(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (numeric, quantile bins)."""
    ref, cur = np.sort(_finite(reference)), np.sort(_finite(current))
    edges = quantile_edges(ref, bins)
    return psi_from_shares(_shares(ref, edges), _shares(cur, edges))


def psi_categorical(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """PSI over the union of categories."""
    ref, cur = np.asarray(reference, dtype=object).astype(str), np.asarray(current, dtype=object).astype(str)
    cats = np.union1d(ref, cur)
    ref_share = np.maximum(np.array([np.sum(ref == c) for c in cats]) / max(ref.size, 1), EPS)
    cur_share = np.maximum(np.array([np.sum(cur == c) for c in cats]) / max(cur.size, 1), EPS)
    return psi_from_shares(ref_share, cur_share)


def wasserstein_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """Wasserstein-1 distance between two empirical distributions given sorted samples.

    The integral of |F - G| over the merged support; the same figure as
    ``scipy.stats.wasserstein_distance`` without re-sorting what is already sorted.
    """
    if ref_sorted.size == 0 or cur_sorted.size == 0:
        return float("nan")
    merged = np.concatenate((ref_sorted, cur_sorted))
    # "stable" is a merge sort: two sorted runs merge in linear time, and the order tells
    # which side each point came from, so both CDFs are running counts (no binary searches).
    # Inside a run of ties the counts are partial, but there the step to the next point is 0.
    order = np.argsort(merged, kind="stable")
    grid = merged[order]
    from_ref = order < ref_sorted.size
    f = np.cumsum(from_ref)[:-1] / ref_sorted.size
    g = np.cumsum(~from_ref)[:-1] / cur_sorted.size
    return float(np.sum(np.abs(f - g) * np.diff(grid)))


def normalised_wasserstein(reference: Sequence[float], current: Sequence[float]) -> float:
    """Wasserstein-1 in units of the reference's standard deviation (scale-free threshold)."""
    ref, cur = np.sort(_finite(reference)), np.sort(_finite(current))
    return wasserstein_sorted(ref, cur) / _scale(ref)


def _scale(ref: np.ndarray) -> float:
    std = float(np.std(ref)) if ref.size else 0.0
    # A constant reference feature: any movement is measured in its own units.
    return std if std > 0 else 1.0


def _finite(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


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
                "psi": psi_from_shares(_shares(ref_ok, edges), _shares(cur_ok, edges)),
                "wasserstein": wasserstein_sorted(ref_ok, cur_ok) / _scale(ref_ok)
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
    ref = np.sort(_finite(reference_scores))
    cur = np.sort(_finite(current_scores))
    if not ref.size or not cur.size:
        return {"available": False, "drift": False, "n_ref": int(ref.size), "n_cur": int(cur.size)}
    stat, p = _numeric_test(ref, cur, "ks")
    edges = quantile_edges(ref, bins)
    value = psi_from_shares(_shares(ref, edges), _shares(cur, edges))
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


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity; ties share their average rank."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def calibration(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error over equal-width score bins, with the bins for the report."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    idx = np.clip((s * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = idx == b
        if not mask.any():
            continue
        mean_score, rate = float(s[mask].mean()), float(y[mask].mean())
        ece += mask.sum() / s.size * abs(mean_score - rate)
        rows.append({"bin": b, "n": int(mask.sum()), "mean_score": mean_score, "observed_rate": rate})
    return {"ece": float(ece), "bins": rows}


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
    realised = auc(scores, labels)
    cal = calibration(scores, labels)
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

    from propensity.storage import open_store

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


# -- calibration on stored snapshots ------------------------------------------------------

# Snapshot columns that are not model inputs: keys, timestamps, and the evaluation segment.
NON_FEATURES = ("customer_id", "event_timestamp", "country")


def calibrate(
    settings: Any,
    reference_dates: Sequence[Any],
    check_dates: Sequence[Any],
    *,
    reference_version: int | None = None,
    stable: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Data-drift verdicts of each check date's snapshot against a reference.

    The reference is the pooled snapshots of ``reference_dates``, or with ``reference_version``
    the stored reference of that model version (what the drift DAG compares with). For
    calibration of the thresholds on real data: the alarm rate over stable check dates is the
    false-alarm rate, and the first alarming date of a known shift its detection delay. Verdicts
    are per day without the cooldown (which only spaces triggers out).

    With ``stable`` (first, last day of a period known to be stable) the result also says how many
    stable checks alarmed, and when a shift started by the data itself (:func:`activity_shift_start`),
    with the delay from that start to the first alarm after it.
    """
    import datetime as dt

    import pyarrow as pa

    from propensity.drift_data import model_name, read_reference
    from propensity.drift_policy import decide
    from propensity.storage import open_store, read_partition

    store = open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    policy = settings.drift
    params = policy.model_dump()

    columns: list[str] | None = None  # the model's monitored features, as the drift DAG picks them

    def features_of(table: pa.Table) -> dict[str, np.ndarray]:
        names = columns if columns is not None else [c for c in table.column_names if c not in NON_FEATURES]
        return {
            c: table.column(c).to_numpy(zero_copy_only=False)
            for c in names
            if c in table.column_names and c not in policy.exclude_features
        }

    if reference_version is not None:
        table, meta = read_reference(store, model_name(settings), reference_version)
        columns = list(meta["feature_columns"])
        reference = features_of(table)
    else:
        reference = features_of(
            pa.concat_tables(
                [read_partition(store, "offline", "customer_features", d) for d in reference_dates]
            )
        )
    rows = []
    for day in check_dates:
        result = data_drift(
            reference,
            features_of(read_partition(store, "offline", "customer_features", day)),
            categorical=params["categorical_features"],
            numeric_test=params["numeric_test"],
            correction=params["correction"],
            p_val=params["p_val"],
            effect_size=params["effect_size"],
            psi_threshold=params["psi_threshold"],
            wasserstein_threshold=params["wasserstein_threshold"],
            bins=params["psi_bins"],
        )
        verdict = decide({"data": {"snapshot": result}}, policy, day)
        worst = max(result["features"].items(), key=lambda kv: kv[1]["psi"])
        rows.append(
            {
                "day": day.isoformat(),
                "alarm": verdict["trigger"],
                "drifted_features": result["drifted_features"],
                "max_psi": worst[1]["psi"],
                "max_psi_feature": worst[0],
            }
        )
    alarms = [r for r in rows if r["alarm"]]
    out: dict[str, Any] = {
        "reference": f"model version {reference_version}"
        if reference_version is not None
        else "pooled snapshots",
        "reference_dates": [d.isoformat() for d in reference_dates] if reference_version is None else [],
        "checks": rows,
        "alarm_rate": len(alarms) / max(len(rows), 1),
        "first_alarm": alarms[0]["day"] if alarms else None,
    }
    if stable is not None:
        first, last = (d.isoformat() for d in stable)
        in_stable = [r for r in rows if first <= r["day"] <= last]
        start, band = activity_shift_start(store, stable[0], stable[1], max(check_dates))
        after = [r for r in alarms if start is not None and r["day"] >= start.isoformat()]
        out["stable"] = {
            "from": first,
            "to": last,
            "checks": len(in_stable),
            "false_alarms": sum(r["alarm"] for r in in_stable),
            "max_psi": max((r["max_psi"] for r in in_stable), default=None),
        }
        out["shift"] = {
            "definition": "first day after the stable period whose trailing 7-day count of distinct "
            "customers exceeds every such count of the stable period",
            "stable_band": band,
            "start": start.isoformat() if start else None,
            "first_alarm": after[0]["day"] if after else None,
            "delay_days": (dt.date.fromisoformat(after[0]["day"]) - start).days if after else None,
        }
    return out


def trailing_active_customers(customer_days: Mapping[Any, set[str]], day: Any, window_days: int = 7) -> int:
    """Distinct customers with an event in the ``window_days`` days ending on ``day`` (inclusive)."""
    import datetime as dt

    seen: set[str] = set()
    for k in range(window_days):
        seen |= customer_days.get(day - dt.timedelta(days=k), set())
    return len(seen)


def first_day_above_band(
    counts: Mapping[Any, int], stable_from: Any, stable_to: Any
) -> tuple[Any | None, dict[str, int]]:
    """(first day after ``stable_to`` whose count exceeds the stable period's maximum, the band)."""
    stable = [v for d, v in counts.items() if stable_from <= d <= stable_to]
    if not stable:
        raise ValueError(f"no counts in the stable period {stable_from}..{stable_to}")
    band = {"min": min(stable), "max": max(stable)}
    later = sorted(d for d in counts if d > stable_to and counts[d] > band["max"])
    return (later[0] if later else None), band


def activity_shift_start(
    store: Any, stable_from: Any, stable_to: Any, until: Any
) -> tuple[Any, dict[str, int]]:
    """When a shift in activity began, read from the validated events rather than a calendar.

    The trailing 7-day count of distinct customers is computed for each day from ``stable_from``
    to ``until``; the start is the first day after the stable period above its maximum.
    """
    import datetime as dt

    import pyarrow.compute as pc

    from propensity.storage import list_partitions, read_partition

    first = stable_from - dt.timedelta(days=6)
    customer_days: dict[Any, set[str]] = {}
    for day in list_partitions(store, "validated", "events"):
        if first <= day <= until:
            ids = read_partition(store, "validated", "events", day).column("customer_id")
            customer_days[day] = set(pc.drop_null(ids).to_pylist())
    counts = {}
    day = stable_from
    while day <= until:
        counts[day] = trailing_active_customers(customer_days, day)
        day += dt.timedelta(days=1)
    return first_day_above_band(counts, stable_from, stable_to)


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m propensity.drift REF_FROM REF_TO CHECK_FROM CHECK_TO`` (drift venv): calibration JSON.

    ``--reference-version N`` compares with model version N's stored reference (as the drift DAG
    does) instead of the pooled snapshots of REF_FROM..REF_TO; ``--stable FROM TO`` names the
    stable period (false alarms counted there, shift start read from the data after it).
    """
    import argparse
    import datetime as dt
    import json
    import sys

    from propensity.settings import get_settings
    from propensity.storage import list_partitions, open_store

    parser = argparse.ArgumentParser(description=_main.__doc__)
    for name in ("ref_from", "ref_to", "check_from", "check_to"):
        parser.add_argument(name, type=dt.date.fromisoformat)
    parser.add_argument("--reference-version", type=int, default=None)
    parser.add_argument("--stable", nargs=2, type=dt.date.fromisoformat, default=None, metavar=("FROM", "TO"))
    args = parser.parse_args(argv)
    settings = get_settings()
    store = open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    have = list_partitions(store, "offline", "customer_features")
    ref = [d for d in have if args.ref_from <= d <= args.ref_to]
    check = [d for d in have if args.check_from <= d <= args.check_to]
    logging.basicConfig(level=logging.WARNING)
    result = calibrate(
        settings,
        ref,
        check,
        reference_version=args.reference_version,
        stable=tuple(args.stable) if args.stable else None,
    )
    json.dump(result, sys.stdout, indent=2)


if __name__ == "__main__":
    _main()

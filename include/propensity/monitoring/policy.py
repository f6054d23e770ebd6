"""Drift policy: three signals -> one verdict, with a cooldown between retraining triggers.

The thresholds are data (``DriftSettings``); each rule reports whether it fired and by how
much, so the verdict explains itself. The trigger history is a JSON file in the zone root,
read *as of* the logical date (only triggers of earlier days count), so re-running a day, or
backfilling an old one after later runs, gives the verdict the scheduled run gave.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from propensity.core.settings import DriftSettings, Settings
from propensity.core.storage import Store

log = logging.getLogger(__name__)

SEVERITY_ORDER = ("none", "low", "moderate", "severe")


def data_signal(checks: Mapping[str, Any], policy: DriftSettings) -> dict[str, Any]:
    """Data drift: enough drifted features in the day's snapshot or in the served window."""
    per_source = {source: result["drifted_features"] for source, result in (checks.get("data") or {}).items()}
    drifted: list[str] = []
    for features in per_source.values():
        drifted += [f for f in features if f not in drifted]
    worst = max((len(v) for v in per_source.values()), default=0)
    details = []
    for source, result in (checks.get("data") or {}).items():
        for name in result["drifted_features"]:
            f = result["features"][name]
            wd = f"{f['wasserstein']:.3f}" if f["wasserstein"] is not None else "n/a"
            details.append(
                f"{name} ({source}): {f['test']} p={f['p_value']:.2g} < {result['threshold']:.2g}, "
                f"PSI {f['psi']:.3f}, W1/sd {wd}"
            )
    return {
        "fired": worst >= policy.min_drifted_features,
        "value": worst,
        "threshold": policy.min_drifted_features,
        "drifted_features": drifted,
        "per_source": per_source,
        "details": details,
    }


def prediction_signal(checks: Mapping[str, Any], policy: DriftSettings) -> dict[str, Any]:
    pred = checks.get("prediction") or {}
    if not pred.get("available"):
        return {"fired": False, "available": False}
    return {
        "fired": bool(pred["drift"]),
        "available": True,
        "value": pred["psi"],
        "threshold": policy.score_psi_threshold,
        "details": [
            f"scores: KS {pred['ks_statistic']:.3f} p={pred['p_value']:.2g}, PSI {pred['psi']:.3f} "
            f"(mean {pred['ref_mean']:.3f} -> {pred['cur_mean']:.3f})"
        ],
    }


def concept_signal(checks: Mapping[str, Any], policy: DriftSettings) -> dict[str, Any]:
    c = checks.get("concept") or {}
    if not c.get("available"):
        return {"fired": False, "available": False, "severe": False, "why": c.get("why")}
    details = [
        f"realised AUC {c['realised_auc']:.3f} vs evaluation {c['reference_auc']:.3f} "
        f"(drop {c['auc_drop']:+.3f}, threshold {policy.auc_drop}, severe {policy.severe_auc_drop}) "
        f"on {c['n_matured']} matured predictions; ECE {c['ece']:.3f} (threshold {policy.calibration_error})"
    ]
    return {
        "fired": bool(c["drift"]),
        "available": True,
        "severe": bool(c["severe"]),
        "value": c["auc_drop"],
        "threshold": policy.auc_drop,
        "details": details,
    }


SIGNALS = {"data": data_signal, "prediction": prediction_signal, "concept": concept_signal}


def triggers_as_of(history: Mapping[str, Any] | None, day: dt.date) -> list[dict[str, Any]]:
    """Triggers recorded for days before ``day`` (this day's own record is not its past)."""
    entries = (history or {}).get("triggers", [])
    return sorted((e for e in entries if dt.date.fromisoformat(e["date"]) < day), key=lambda e: e["date"])


def decide(
    checks: Mapping[str, Any],
    policy: DriftSettings,
    day: dt.date,
    history: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One verdict for ``day`` from the detectors' output and the trigger history.

    ``drift``: some signal fired. ``trigger``: a signal the policy lets trigger retraining
    fired, and no trigger happened in the last ``cooldown_days`` days (a severe concept drift
    overrides the cooldown: a model known to be wrong is not left serving).
    """
    signals = {name: fn(checks, policy) for name, fn in SIGNALS.items()}
    fired = [name for name, s in signals.items() if s["fired"]]
    eligible = [name for name in fired if name in policy.trigger_on]
    severe = signals["concept"].get("severe", False) and "concept" in policy.trigger_on
    if severe:
        severity = "severe"
    elif eligible:
        severity = "moderate"
    elif fired:
        severity = "low"
    else:
        severity = "none"

    past = triggers_as_of(history, day)
    last = dt.date.fromisoformat(past[-1]["date"]) if past else None
    days_since = (day - last).days if last else None
    in_cooldown = days_since is not None and days_since < policy.cooldown_days
    trigger = bool(eligible) and (not in_cooldown or severe)

    reasons = [f"{name}_drift" for name in fired]
    details = [d for name in fired for d in signals[name].get("details", [])]
    if eligible and in_cooldown and not severe:
        details.append(
            f"cooldown: last trigger {last} ({days_since} d ago) < {policy.cooldown_days} d, not triggering"
        )
    elif eligible and in_cooldown and severe:
        details.append(f"cooldown overridden: severe concept drift (last trigger {last})")
    verdict = {
        "day": day.isoformat(),
        "drift": bool(fired),
        "trigger": trigger,
        "severity": severity,
        "reasons": reasons,
        "reason": ",".join(reasons) if reasons else "no_drift",
        "details": details,
        "drifted_features": signals["data"]["drifted_features"],
        "signals": signals,
        "cooldown": {
            "days": policy.cooldown_days,
            "last_trigger": last.isoformat() if last else None,
            "days_since": days_since,
            "active": in_cooldown,
            "overridden": bool(in_cooldown and severe and eligible),
        },
    }
    log.info("drift verdict for %s: %s (%s) trigger=%s", day, severity, verdict["reason"], trigger)
    return verdict


# -- trigger history ----------------------------------------------------------------------


def read_history(store: Store, path: str) -> dict[str, Any]:
    return store.read_json(path) if store.exists(path) else {"triggers": []}


def record_verdict(store: Store, path: str, verdict: Mapping[str, Any]) -> dict[str, Any]:
    """Upsert this day's trigger into the history (or remove it when the day no longer triggers).

    Idempotent: a re-run of the day replaces its own entry and leaves the others as they are.
    Runs of the drift DAG are serial (max_active_runs=1), so read-modify-write does not race.
    """
    history = read_history(store, path)
    entries = [e for e in history.get("triggers", []) if e["date"] != verdict["day"]]
    if verdict["trigger"]:
        entries.append(
            {
                "date": verdict["day"],
                "reasons": list(verdict["reasons"]),
                "severity": verdict["severity"],
                "drifted_features": list(verdict["drifted_features"]),
            }
        )
    history = {"triggers": sorted(entries, key=lambda e: e["date"])}
    store.write_json(history, path)
    return history


def decide_and_record(
    checks: Mapping[str, Any], policy: DriftSettings, day: dt.date, store: Store
) -> dict[str, Any]:
    """The verdict for ``day`` against the stored history, recorded in it."""
    verdict = decide(checks, policy, day, read_history(store, policy.history_path))
    record_verdict(store, policy.history_path, verdict)
    return verdict


def decide_and_record_for(settings: Settings, day: dt.date, checks: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`decide_and_record` against the zone of ``settings`` (the DAG's entry point)."""
    from propensity.core.zones import zone_store

    return decide_and_record(checks, settings.drift, day, zone_store(settings))


def training_conf(
    verdict: Mapping[str, Any], report: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``training`` DAG's conf when the verdict triggers retraining, else None."""
    if not verdict["trigger"]:
        return None
    return {
        "reason": verdict["reason"],
        "drifted_features": list(verdict["drifted_features"]),
        "triggered_by": "drift",
        "as_of": verdict["day"],
        "severity": verdict["severity"],
        "report": (report or {}).get("html"),
    }

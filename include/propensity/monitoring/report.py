"""Drift report of day D: an HTML page people want to read, a JSON summary beside it, MLflow copies.

Written to ``reports/drift/date=D/{report.html,summary.json}`` under the zone root (replaced
atomically on a re-run). The realised-quality trend is read from earlier days' summaries, as of
D, so a re-run draws the same trend.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
from typing import Any

import numpy as np

from propensity.core.settings import Settings
from propensity.core.storage import Store
from propensity.core.templates import render
from propensity.core.zones import zone_store
from propensity.monitoring.window import read_staged

log = logging.getLogger(__name__)

DRIFT_EXPERIMENT = "drift-monitoring"


def report_parts(settings: Settings, day: dt.date) -> tuple[str, str]:
    return settings.drift.report_dir, f"date={day.isoformat()}"


# -- summary ------------------------------------------------------------------------------


def summarize(manifest: dict[str, Any], checks: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    """The figures worth keeping per day (no per-bin detail): what the trend and dashboards read."""
    data = {
        source: {
            "drifted_features": r["drifted_features"],
            "threshold": r["threshold"],
            "max_psi": max((f["psi"] for f in r["features"].values()), default=0.0),
            "features": {
                n: {k: f[k] for k in ("p_value", "psi", "wasserstein", "drifted")}
                for n, f in r["features"].items()
            },
        }
        for source, r in checks.get("data", {}).items()
    }
    concept = {k: v for k, v in checks.get("concept", {}).items() if k != "calibration_bins"}
    return {
        "day": manifest["day"],
        "model_name": manifest["model_name"],
        "model_version": manifest["model_version"],
        "rows": manifest["rows"],
        "verdict": {
            k: verdict[k]
            for k in (
                "drift",
                "trigger",
                "severity",
                "reasons",
                "reason",
                "details",
                "drifted_features",
                "cooldown",
            )
        },
        "data": data,
        "prediction": checks.get("prediction", {}),
        "concept": concept,
    }


def quality_trend(store: Store, settings: Settings, day: dt.date) -> list[dict[str, Any]]:
    """Realised AUC per earlier day (``trend_days`` back, before ``day``) from stored summaries."""
    out = []
    base = settings.drift.report_dir
    first = day - dt.timedelta(days=settings.drift.trend_days)
    for entry in store.list_dir(base):
        if not entry.startswith("date="):
            continue
        d = dt.date.fromisoformat(entry[len("date=") :])
        if not first <= d < day or not store.exists(base, entry, "summary.json"):
            continue
        concept = store.read_json(base, entry, "summary.json").get("concept", {})
        if concept.get("available"):
            out.append(
                {
                    "day": d.isoformat(),
                    "realised_auc": concept["realised_auc"],
                    "reference_auc": concept["reference_auc"],
                    "ece": concept.get("ece"),
                }
            )
    return sorted(out, key=lambda r: r["day"])


# -- plots --------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _distribution_plot(name: str, ref: np.ndarray, cur: np.ndarray, label_cur: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    if ref.dtype.kind in "OUS":
        cats = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)
        x = np.arange(len(cats))
        share = lambda a: np.array([np.mean(a == c) for c in cats])  # noqa: E731
        ax.bar(x - 0.2, share(ref), 0.4, label="reference")
        ax.bar(x + 0.2, share(cur), 0.4, label=label_cur)
        ax.set_xticks(x, [str(c) for c in cats], rotation=45, fontsize=7)
    else:
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        both = np.concatenate([ref, cur])
        # 1st-99th percentile: one outlier customer would otherwise squash every bar into one.
        lo, hi = np.percentile(both, [1, 99]) if both.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        ax.hist(np.clip(ref, lo, hi), bins=bins, density=True, alpha=0.55, label="reference")
        ax.hist(np.clip(cur, lo, hi), bins=bins, density=True, alpha=0.55, label=label_cur)
    ax.set_title(name, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _trend_plot(trend: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    days = [dt.date.fromisoformat(r["day"]) for r in trend]
    ax.plot(days, [r["realised_auc"] for r in trend], marker="o", label="realised AUC (matured)")
    ax.plot(days, [r["reference_auc"] for r in trend], linestyle="--", label="evaluation AUC")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def _column(table: Any, name: str) -> np.ndarray | None:
    if table is None or name not in table.column_names:
        return None
    return table.column(name).to_numpy(zero_copy_only=False)


def render_html(summary: dict[str, Any], checks: dict[str, Any], plots: dict[str, str], trend: list) -> str:
    """The report page: decision, per-feature table with a plot per drifted feature, scores, quality."""
    return render("drift_report.html.j2", summary=summary, checks=checks, plots=plots, trend=trend)


def write_report(
    settings: Settings,
    day: dt.date,
    manifest: dict[str, Any],
    checks: dict[str, Any],
    verdict: dict[str, Any],
) -> dict[str, Any]:
    """Write ``report.html`` and ``summary.json`` for ``day``; returns their URIs (and MLflow's run)."""
    store = zone_store(settings)
    reference = read_staged(settings, manifest, "reference")
    plots: dict[str, str] = {}
    for source, result in checks.get("data", {}).items():
        current = read_staged(settings, manifest, source)
        for name in result["drifted_features"]:
            ref, cur = _column(reference, name), _column(current, name)
            if ref is not None and cur is not None:
                plots[f"{source}:{name}"] = _distribution_plot(name, ref, cur, source)
    ref_scores, cur_scores = (
        _column(reference, "score"),
        _column(read_staged(settings, manifest, "served"), "score"),
    )
    if ref_scores is not None and cur_scores is not None:
        plots["scores"] = _distribution_plot("score", ref_scores, cur_scores, "served")
    summary = summarize(manifest, checks, verdict)
    trend = quality_trend(store, settings, day)
    if checks.get("concept", {}).get("available"):
        trend = [
            *trend,
            {
                "day": day.isoformat(),
                "realised_auc": checks["concept"]["realised_auc"],
                "reference_auc": checks["concept"]["reference_auc"],
                "ece": checks["concept"]["ece"],
            },
        ]
    if len(trend) >= 1:
        plots["trend"] = _trend_plot(trend)
    summary["quality_trend"] = trend
    parts = report_parts(settings, day)
    # Summary first: the trend of later days reads it, the HTML is for people.
    json_uri = store.write_json(summary, *parts, "summary.json")
    html_uri = store.write_bytes(render_html(summary, checks, plots, trend).encode(), *parts, "report.html")
    log.info("drift report for %s: %s (summary %s)", day, html_uri, json_uri)
    return {"html": html_uri, "json": json_uri, "plots": sorted(plots)}


def log_to_mlflow(
    settings: Settings, day: dt.date, report: dict[str, Any], verdict: dict[str, Any]
) -> str | None:
    """Log the report and the verdict's figures to MLflow (one run per day, reused on re-runs).

    Returns the run id, or None when no tracking URI is configured.
    """
    uri = getattr(settings.training, "mlflow_tracking_uri", None)
    if not uri:
        log.info("no MLflow tracking URI configured: drift report kept in the zone only")
        return None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(DRIFT_EXPERIMENT)
    found = client.search_runs([exp_id], filter_string=f"tags.drift_day = '{day.isoformat()}'", max_results=1)
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(
            exp_id, run_name=f"drift-{day.isoformat()}", tags={"drift_day": day.isoformat()}
        ).info.run_id
    )
    store = zone_store(settings)
    parts = report_parts(settings, day)
    for name in ("report.html", "summary.json"):
        client.log_text(run_id, store.read_bytes(*parts, name).decode(), f"drift/{name}")
    client.log_metric(run_id, "drifted_features", len(verdict["drifted_features"]))
    client.log_metric(run_id, "trigger", int(verdict["trigger"]))
    concept = verdict["signals"]["concept"]
    if concept.get("available"):
        client.log_metric(run_id, "auc_drop", concept["value"])
    client.set_tag(run_id, "severity", verdict["severity"])
    client.set_tag(run_id, "reason", verdict["reason"])
    client.set_terminated(run_id)
    log.info("drift report for %s logged to MLflow run %s (%s)", day, run_id, uri)
    return run_id


def publish_report(
    settings: Settings, manifest: dict[str, Any], checks: dict[str, Any], verdict: dict[str, Any]
) -> dict[str, Any]:
    """Write the report of the manifest's day and log it to MLflow (the DAG's entry point)."""
    day = dt.date.fromisoformat(manifest["day"])
    report = write_report(settings, day, manifest, checks, verdict)
    report["mlflow_run_id"] = log_to_mlflow(settings, day, report, verdict)
    return report


def notify_drift(verdict: dict[str, Any], report: dict[str, Any]) -> bool:
    """Send an alert when there is drift; True when one was sent.

    Goes through ``propensity.core.alerts.send_alert`` (the notifier module); until that exists the
    alert is a warning in the task log, which Airflow's own failure/SLA channels do not cover.
    """
    if not verdict["drift"]:
        return False
    action = (
        "retraining triggered"
        if verdict["trigger"]
        else "no retraining (" + ("cooldown" if verdict["cooldown"]["active"] else "policy") + ")"
    )
    title = f"Drift on {verdict['day']}: {verdict['reason']} ({verdict['severity']}), {action}"
    details = {
        "reasons": verdict["reasons"],
        "details": verdict["details"],
        "drifted_features": verdict["drifted_features"],
        "report": report.get("html"),
        "mlflow_run_id": report.get("mlflow_run_id"),
    }
    try:
        from propensity.core.alerts import send_alert
    except ImportError:
        log.warning("ALERT (no notifier configured: propensity.core.alerts missing): %s %s", title, details)
        return False
    send_alert("drift", title, details)
    return True

"""The training DAG's steps, one function per task, passing plain values between them.

build the training set -> train -> evaluate vs champion -> register challenger -> shadow ->
gate -> promote (unless dry-run) -> write the drift reference. Each step is a function of the
training date ``as_of`` and its inputs, so re-running a date reuses what exists: the same
training set, the same registered version, no second promotion.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from propensity.core.settings import Settings
from propensity.core.zones import SNAPSHOTS, TRAINING_SETS, VALIDATED_EVENTS
from propensity.features.spec import FEATURE_SERVICE, MODEL_FEATURES, matrix

log = logging.getLogger(__name__)


def _store(settings: Settings):
    from propensity.core.zones import zone_store

    return zone_store(settings)


def first_validated_day(settings: Settings) -> dt.date:
    from propensity.core.storage import list_partitions

    days = list_partitions(_store(settings), *VALIDATED_EVENTS)
    if not days:
        from propensity.core.errors import DataError

        raise DataError(f"no validated events under {settings.zone_root}/validated/events: run ingest first")
    return days[0]


def prepare_training_set(settings: Settings, as_of: dt.date) -> dict[str, Any]:
    """The point-in-time training set for ``as_of``, stored once per date.

    Built by :func:`propensity.training.snapshot_join.write_training_set`: each cutoff's snapshot
    read directly (already point-in-time correct) and streamed to the partition a cutoff at a
    time, so time and memory follow the rows, not customers x snapshots (Feast's file store).
    """
    import pyarrow.compute as pc

    from propensity.core.cutoffs import as_dict, plan_cutoffs
    from propensity.core.storage import partition_exists, read_partition
    from propensity.training.snapshot_join import write_training_set

    store = _store(settings)
    plan = plan_cutoffs(first_validated_day(settings), as_of, settings.training)
    if partition_exists(store, *TRAINING_SETS, as_of):
        table = read_partition(store, *TRAINING_SETS, as_of)
        rows, positives = table.num_rows, int(pc.sum(table.column("label")).as_py() or 0)
    else:
        written = write_training_set(settings, plan.all, as_of)
        rows, positives = written["rows"], written["positives"]
    return {"as_of": as_of.isoformat(), "rows": rows, "positives": positives, "plan": as_dict(plan)}


def load_training_set(settings: Settings, as_of: dt.date) -> pd.DataFrame:
    from propensity.core.storage import read_partition
    from propensity.training.snapshot_join import to_frame

    return to_frame(read_partition(_store(settings), *TRAINING_SETS, as_of))


def train_challenger(
    settings: Settings, as_of: dt.date, *, reason: str, trigger: dict[str, Any] | None = None
) -> dict[str, Any]:
    from propensity.core.cutoffs import plan_cutoffs
    from propensity.training.train import fit, log_training_run

    frame = load_training_set(settings, as_of)
    plan = plan_cutoffs(first_validated_day(settings), as_of, settings.training)
    result = fit(frame, MODEL_FEATURES, plan, settings.training)
    return log_training_run(
        settings,
        frame,
        MODEL_FEATURES,
        plan,
        result,
        as_of=as_of,
        feature_service=FEATURE_SERVICE,
        reason=reason,
        trigger=trigger,
    )


def evaluate_challenger(settings: Settings, as_of: dt.date, run: dict[str, Any]) -> dict[str, Any]:
    """Challenger vs the current champion on the same evaluation rows."""
    import mlflow.xgboost

    from propensity.core.cutoffs import plan_cutoffs
    from propensity.features.spec import matrix
    from propensity.training.evaluate import compare
    from propensity.training.registry import CHAMPION, Registry

    registry = Registry(settings)
    frame = load_training_set(settings, as_of)
    plan = plan_cutoffs(first_validated_day(settings), as_of, settings.training)
    evaluation = frame[frame["cutoff"].isin(plan.evaluation)].reset_index(drop=True)
    x = matrix(evaluation, MODEL_FEATURES)
    challenger = mlflow.xgboost.load_model(run["model_uri"])
    champion_version = registry.alias_version(CHAMPION)
    champion_scores = registry.load_booster(champion_version).inplace_predict(x) if champion_version else None
    comparison = compare(evaluation, challenger.inplace_predict(x), champion_scores, settings.training)
    comparison["champion_version"] = champion_version
    return json.loads(json.dumps(comparison, default=float))


def register_challenger(
    settings: Settings, as_of: dt.date, run: dict[str, Any], comparison: dict[str, Any]
) -> str:
    from propensity.training.gate import scored_auc
    from propensity.training.registry import Registry

    tags = {
        "training_as_of": as_of.isoformat(),
        "data_hash": run["lineage"]["data_hash"],
        "run_id": run["run_id"],
        "eval_auc": f"{comparison['challenger_auc']:.6f}",
        "champion_auc_at_registration": ""
        if comparison["champion_auc"] is None
        else f"{comparison['champion_auc']:.6f}",
        # Every baseline on the evaluation rows: recency, frequency, BG/NBD, RFM XGBoost (issue 19).
        # One that could not be scored is tagged empty, as a first model's champion AUC is.
        **{
            f"baseline_{name}_auc": "" if (auc := scored_auc(value)) is None else f"{auc:.6f}"
            for name, value in run["baselines"].items()
        },
        "segments": json.dumps(comparison["segments"], default=float),
        "feature_service": run["lineage"]["feature_service"],
    }
    return Registry(settings).register(run["model_uri"], tags, logical_date=as_of.isoformat())


def shadow_challenger(
    settings: Settings, as_of: dt.date, version: str, deployment: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Challenger beside champion on logged traffic, or the latest snapshot before there is any.

    ``deployment`` is :func:`deploy_shadow`'s result: a challenger the server could not load or
    that failed parity fails the shadow test with that reason."""
    if deployment and deployment.get("error"):
        return {"source": "deploy", "rows": 0, "errors": 1, "error_rate": 1.0, "error": deployment["error"]}
    from propensity.core.storage import list_partitions, read_partition
    from propensity.features.spec import matrix
    from propensity.training.evaluate import shadow_test
    from propensity.training.registry import CHAMPION, Registry

    registry = Registry(settings)
    challenger = registry.load_booster(version)
    champion_version = registry.alias_version(CHAMPION)
    champion = (
        registry.load_booster(champion_version) if champion_version and champion_version != version else None
    )
    traffic, source = _logged_traffic(settings, as_of)
    if traffic is None:
        days = [d for d in list_partitions(_store(settings), *SNAPSHOTS) if d <= as_of]
        if not days:
            return {
                "source": "none",
                "rows": 0,
                "errors": 0,
                "error_rate": 0.0,
                "error": "no snapshot to shadow on",
            }
        traffic = read_partition(_store(settings), *SNAPSHOTS, days[-1]).to_pandas()
        source = f"feature snapshot {days[-1]}"
    return shadow_test(challenger, champion, matrix(traffic, MODEL_FEATURES), source=source)


def _logged_traffic(settings: Settings, as_of: dt.date) -> tuple[pd.DataFrame | None, str]:
    """Requests the API served in the week before ``as_of`` (features as served), if any."""
    from propensity.monitoring.window import prediction_log_dir, read_prediction_log

    days = [as_of - dt.timedelta(days=k) for k in range(7, 0, -1)]
    table = read_prediction_log(_store(settings), prediction_log_dir(settings), days, list(MODEL_FEATURES))
    if table is None or table.num_rows == 0 or not set(MODEL_FEATURES) <= set(table.column_names):
        return None, ""
    return table.to_pandas(), f"prediction log {days[0]}..{days[-1]}"


def gate_challenger(
    settings: Settings,
    as_of: dt.date,
    version: str,
    run: dict[str, Any],
    comparison: dict[str, Any],
    shadow: dict[str, Any],
) -> dict[str, Any]:
    """The gate's verdict, logged to the training run as JSON, Markdown and HTML."""
    import mlflow

    from propensity.training.gate import decide, render_html, render_markdown
    from propensity.training.train import configure_mlflow

    report = decide(comparison, shadow, run["baselines"], settings.training.gate)
    report |= {
        "version": version,
        "champion_version": comparison.get("champion_version"),
        "as_of": as_of.isoformat(),
        "shadow": shadow,
    }
    configure_mlflow(settings)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run["run_id"]):
        for name, text in (
            ("gate_report.json", json.dumps(report, indent=2, default=float)),
            ("gate_report.md", render_markdown(report)),
            ("gate_report.html", render_html(report)),
        ):
            (Path(tmp) / name).write_text(text)
            mlflow.log_artifact(str(Path(tmp) / name), artifact_path="gate")
        mlflow.set_tag("gate_verdict", "promote" if report["passed"] else "refuse")
    log.info(
        "gate for v%s: %s\n%s", version, "PROMOTE" if report["passed"] else "REFUSE", render_markdown(report)
    )
    return json.loads(json.dumps(report, default=float))


def promote_challenger(
    settings: Settings, as_of: dt.date, version: str, report: dict[str, Any], *, dry_run: bool, reason: str
) -> dict[str, Any]:
    """Move ``champion`` when the gate passed (compare-and-set), else record the refusal."""
    from propensity.core.alerts import send_alert
    from propensity.training.registry import Registry

    registry = Registry(settings)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if dry_run or failed:
        # Not promoted: the registry records why, and the challenger leaves shadow.
        action, why = (
            ("dry_run", f"dry run: {reason}") if dry_run else ("refuse", f"gate failed: {', '.join(failed)}")
        )
        registry.record(action, version=version, reason=why, logical_date=as_of.isoformat(), report=report)
        retire_challenger_shadow(settings, version)
        if dry_run:
            return {
                "promoted": False,
                "detail": "dry run: evaluated without promoting",
                "passed": report["passed"],
            }
        send_alert(
            "promotion_refused",
            f"v{version} not promoted: {', '.join(failed)}",
            {"version": version, "as_of": as_of.isoformat(), "failed_checks": failed},
            settings=settings,
        )
        return {"promoted": False, "detail": f"gate refused: {failed}", "passed": False}
    result = registry.promote(
        version,
        expected_champion=report.get("champion_version"),
        report=report,
        reason=reason,
        logical_date=as_of.isoformat(),
    )
    if result["promoted"]:
        write_reference(settings, as_of, version)
        send_alert(
            "promotion",
            f"v{version} is champion (was {result.get('previous')})",
            {
                "version": version,
                "previous": result.get("previous"),
                "as_of": as_of.isoformat(),
                "reason": reason,
            },
            settings=settings,
        )
    return result | {"passed": True}


def write_reference(settings: Settings, as_of: dt.date, version: str, max_rows: int = 20_000) -> str:
    """The drift reference of a champion: a sample of its training rows' features, labels and scores."""
    import pyarrow as pa

    from propensity.features.spec import matrix
    from propensity.monitoring.window import write_reference as store_reference
    from propensity.training.registry import Registry

    registry = Registry(settings)
    frame = load_training_set(settings, as_of)
    sample = frame.sample(n=min(max_rows, len(frame)), random_state=7).sort_values(
        ["cutoff", "customer_id"], ignore_index=True
    )
    ref = sample.loc[:, [*MODEL_FEATURES, "label"]].copy()
    ref["score"] = (
        registry.load_booster(version).inplace_predict(matrix(sample, MODEL_FEATURES)).astype(float)
    )
    eval_auc = float(registry.client.get_model_version(registry.name, version).tags.get("eval_auc", "nan"))
    return store_reference(
        _store(settings),
        registry.name,
        version,
        pa.Table.from_pandas(ref, preserve_index=False),
        eval_auc=eval_auc,
        feature_columns=list(MODEL_FEATURES),
    )


def resolve_as_of(training_end_date: str | None, conf: dict[str, Any] | None, fallback: dt.date) -> dt.date:
    """The training date: the Param, else the drift trigger's ``as_of``, else the run's own day."""
    if training_end_date:
        return dt.date.fromisoformat(str(training_end_date))
    if conf and conf.get("as_of"):
        return dt.date.fromisoformat(str(conf["as_of"]))
    return fallback


def _parity_sample(settings: Settings, as_of: dt.date):
    """Real rows for the deploy's parity check: ``serving.parity_rows`` customers of the latest
    snapshot up to ``as_of`` (None before any snapshot: the deploy then samples the model's splits)."""
    from propensity.core.storage import list_partitions, read_partition

    days = [d for d in list_partitions(_store(settings), *SNAPSHOTS) if d <= as_of]
    if not days:
        return None
    snapshot = read_partition(_store(settings), *SNAPSHOTS, days[-1]).slice(0, settings.serving.parity_rows)
    return matrix(snapshot.to_pandas(), MODEL_FEATURES)


def _deploy_recorded(
    settings: Settings, registry: Any, version: str, role: str, as_of: dt.date, failed_event: str
) -> dict[str, Any]:
    """Deploy the registered ``version`` as ``role`` (parity on the snapshot of ``as_of``); a
    failure is written to the registry's audit log as ``failed_event`` and raised (DeployError)."""
    from propensity.serving.deploy import DeployError, deploy_model

    try:
        return deploy_model(
            settings,
            registry.load_booster(version),
            version,
            role,
            sample=_parity_sample(settings, as_of),
            source=registry.model_uri(version),
        )
    except DeployError as exc:
        registry.record(
            failed_event, version=version, reason=str(exc), logical_date=as_of.isoformat(), report=exc.record
        )
        raise


def deploy_shadow(settings: Settings, as_of: dt.date, version: str) -> dict[str, Any]:
    """Deploy the registered challenger beside the champion: the API scores it on live traffic too
    (logged, never answered) while the gate decides. A challenger that cannot be deployed is not an
    error of this task: the shadow test reports it and the gate refuses."""
    from propensity.serving.deploy import DeployError
    from propensity.serving.manifest import read_deployment
    from propensity.training.registry import Registry

    registry = Registry(settings)
    state = read_deployment(settings)
    if not state.get("champion"):
        # A shadow is scored beside a champion; the first model's shadow test runs on a snapshot.
        return {"deployed": False, "shadow": None, "detail": "no champion deployed to shadow beside"}
    if str((state.get("champion") or {}).get("version")) == str(version):
        return {"deployed": False, "shadow": None, "detail": f"v{version} is already the champion"}
    if str((state.get("shadow") or {}).get("version")) == str(version):
        return {"deployed": False, "shadow": version, "detail": f"v{version} already in shadow"}
    try:
        record = _deploy_recorded(settings, registry, version, "shadow", as_of, "shadow_failed")
    except DeployError as exc:
        return {"deployed": False, "shadow": None, "error": f"shadow deploy failed: {exc}"}
    registry.record(
        "shadow",
        version=version,
        reason="challenger in shadow",
        logical_date=as_of.isoformat(),
        report=record,
    )
    return {"deployed": True, "shadow": version, "record": record}


def retire_challenger_shadow(settings: Settings, version: str) -> dict[str, Any]:
    """Stop shadow-scoring ``version`` (a refused or dry-run challenger); nothing else changes."""
    from propensity.serving.deploy import retire_shadow
    from propensity.serving.manifest import read_deployment

    if str((read_deployment(settings).get("shadow") or {}).get("version")) != str(version):
        return {"action": "retire_shadow", "status": "noop"}
    return retire_shadow(settings)


def deploy_champion(settings: Settings, as_of: dt.date) -> dict[str, Any]:
    """Make the model server serve the registry's champion (no-op when it already does).

    A failed deploy leaves the previous version live, is written to the registry's audit log,
    and fails the task with the reason.
    """
    from propensity.serving.deploy import DeployError
    from propensity.serving.manifest import read_deployment
    from propensity.training.registry import CHAMPION, Registry

    registry = Registry(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return {"deployed": False, "detail": "no champion yet"}
    serving = (read_deployment(settings).get("champion") or {}).get("version")
    if str(serving) == str(version):
        return {"deployed": False, "detail": f"v{version} already serving", "champion": version}
    try:
        record = _deploy_recorded(settings, registry, version, "champion", as_of, "deploy_failed")
    except DeployError as exc:
        from propensity.core.alerts import send_alert

        send_alert(
            "deploy_failed",
            f"v{version} not deployed; the previous version stays live",
            {"reason": str(exc)},
            settings=settings,
        )
        raise
    registry.record(
        "deploy", version=version, reason="champion deployed", logical_date=as_of.isoformat(), report=record
    )
    return {"deployed": True, "champion": version, "record": record}


def rollback_champion(settings: Settings, as_of: dt.date, *, reason: str) -> dict[str, Any]:
    """Restore the previous champion in the registry (the deploy step then serves it)."""
    from propensity.training.registry import Registry

    return Registry(settings).rollback(reason=reason, logical_date=as_of.isoformat())


def champion_summary(settings: Settings) -> dict[str, Any]:
    """Champion version, its evaluation AUC and the baselines (for the demo's summary)."""
    from propensity.training.registry import CHAMPION, Registry

    registry = Registry(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return {"champion": None}
    tags = registry.client.get_model_version(registry.name, version).tags
    return {
        "champion": version,
        "eval_auc": float(tags.get("eval_auc", "nan")),
        "baseline_recency_auc": float(tags.get("baseline_recency_auc") or "nan"),
        "baseline_frequency_auc": float(tags.get("baseline_frequency_auc") or "nan"),
    }


__all__ = [
    "prepare_training_set",
    "train_challenger",
    "evaluate_challenger",
    "register_challenger",
    "deploy_shadow",
    "shadow_challenger",
    "gate_challenger",
    "promote_challenger",
    "write_reference",
    "champion_summary",
    "resolve_as_of",
    "deploy_champion",
    "rollback_champion",
]

"""Train stage: time-split training set -> XGBoost -> one fully described MLflow run.

The training frame has one row per (customer, cutoff): ``customer_id``, ``cutoff`` (date),
the model's feature columns (:data:`propensity.features.job.MODEL_FEATURES`, in order),
``country`` and ``label`` (bought within the horizon after the cutoff).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from propensity.core.cutoffs import CutoffPlan
from propensity.core.settings import Settings, TrainingSettings, project_home
from propensity.core.stats import auc, expected_calibration_error
from propensity.features.spec import matrix

log = logging.getLogger(__name__)


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Every quality figure logged for a model on its evaluation rows."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

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


def data_hash(frame: pd.DataFrame) -> str:
    """Content hash of the training set (row order independent)."""
    ordered = frame.sort_values(["cutoff", "customer_id"], kind="mergesort").reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(ordered, index=False).values.tobytes()).hexdigest()[:16]


@dataclass
class TrainResult:
    booster: xgb.Booster
    params: dict[str, Any]
    best_iteration: int
    eval_metrics: dict[str, float]
    baselines: dict[str, float]
    eval_scores: np.ndarray
    search: list[dict[str, Any]] = field(default_factory=list)
    # The chosen candidate's scores on the rolling-origin validation rows (cutoff, margin, label).
    oof: pd.DataFrame | None = None


def fit(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    plan: CutoffPlan,
    cfg: TrainingSettings,
    *,
    baselines: bool = True,
) -> TrainResult:
    """XGBoost chosen on the training cutoffs, scored on the evaluation cutoffs.

    With ``cfg.selection.enabled`` (the default): rounds and parameters by rolling-origin
    selection over the train and validation cutoffs, then refit on all of them
    (:mod:`propensity.training.selection`). Otherwise: early stopping on the validation cutoffs.
    ``baselines`` scores every baseline on the evaluation rows too (the bench turns it off).
    """
    parts = {
        name: frame[frame["cutoff"].isin(getattr(plan, name))] for name in ("train", "valid", "evaluation")
    }
    for name, part in parts.items():
        if part.empty or part["label"].nunique() < 2:
            raise ValueError(
                f"the {name} split has {len(part)} rows and labels {sorted(part['label'].unique())}: need both classes"
            )
    chosen = None
    if cfg.selection.enabled:
        from propensity.training.selection import NoFoldError, refit, select

        matured = [*plan.train, *plan.valid]
        try:
            chosen = select(frame, features, matured, cfg.xgb_params, cfg.label_horizon_days, cfg.selection)
        except NoFoldError as exc:
            log.warning("rolling-origin selection impossible, early stopping instead: %s", exc)
    if chosen is not None:
        booster = refit(frame, features, matured, chosen, cfg.selection)
        params, search = chosen.params, chosen.trials
    else:
        booster, params, search = _early_stopped(parts, features, cfg)

    evaluation = parts["evaluation"]
    scores = booster.inplace_predict(matrix(evaluation, features))
    y = evaluation["label"].to_numpy()
    if baselines:
        from propensity.training.baselines import all_baseline_scores

        base = {name: auc(y, s) for name, s in all_baseline_scores(frame, plan, evaluation, cfg).items()}
    else:
        base = {}
    return TrainResult(
        booster=booster,
        params=params,
        best_iteration=booster.num_boosted_rounds(),
        eval_metrics=classification_metrics(y, scores),
        baselines=base,
        eval_scores=scores,
        search=search,
        oof=chosen.oof if chosen is not None else None,
    )


def _early_stopped(
    parts: dict[str, pd.DataFrame], features: tuple[str, ...], cfg: TrainingSettings
) -> tuple[xgb.Booster, dict[str, Any], list[dict[str, Any]]]:
    """The pre-selection path: early stopping on the validation cutoffs (and the small search)."""
    dtrain = xgb.DMatrix(
        matrix(parts["train"], features), label=parts["train"]["label"], feature_names=list(features)
    )
    dvalid = xgb.DMatrix(
        matrix(parts["valid"], features), label=parts["valid"]["label"], feature_names=list(features)
    )
    candidates = [dict(cfg.xgb_params)]
    if cfg.search_enabled:
        for depth in (3, 6):
            for eta in (0.03, 0.1):
                candidates.append({**cfg.xgb_params, "max_depth": depth, "eta": eta})
    search, best = [], None
    started = time.monotonic()
    for i, params in enumerate(candidates):
        if i and time.monotonic() - started > cfg.search_budget_s:
            log.info("search budget of %.0fs spent after %d candidates", cfg.search_budget_s, i)
            break
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=cfg.num_boost_round,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=cfg.early_stopping_rounds,
            verbose_eval=False,
        )
        score = float(booster.best_score)
        search.append(
            {
                "max_depth": params["max_depth"],
                "eta": params["eta"],
                "valid_auc": score,
                "rounds": booster.best_iteration + 1,
            }
        )
        if best is None or score > best[0]:
            best = (score, params, booster)
    assert best is not None
    _, params, booster = best
    # Keep only the trees early stopping chose, so every consumer of the file scores the same model.
    return booster[: booster.best_iteration + 1], params, search


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_home(), capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the profile's tracking store and make sure the experiment exists."""
    import mlflow

    cfg = settings.training
    if cfg.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(cfg.mlflow_tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        root = cfg.mlflow_artifact_root
        location = root if "://" in root else Path(root).as_uri()
        mlflow.create_experiment(cfg.experiment, artifact_location=f"{location.rstrip('/')}/{cfg.experiment}")
    mlflow.set_experiment(cfg.experiment)


def log_training_run(
    settings: Settings,
    frame: pd.DataFrame,
    features: tuple[str, ...],
    plan: CutoffPlan,
    result: TrainResult,
    *,
    as_of: dt.date,
    feature_service: str,
    reason: str,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One MLflow run holding everything needed to trust (or distrust) the model."""
    import mlflow
    from mlflow.models import infer_signature

    from propensity.training.plots import training_plots

    configure_mlflow(settings)
    evaluation = frame[frame["cutoff"].isin(plan.evaluation)]
    y = evaluation["label"].to_numpy()
    example = frame.loc[:, list(features)].head(5).astype("float32")
    lineage = {
        "feature_service": feature_service,
        "training_as_of": as_of.isoformat(),
        "cutoff_first": plan.all[0].isoformat(),
        "cutoff_last": plan.all[-1].isoformat(),
        "cutoffs_train": len(plan.train),
        "cutoffs_valid": len(plan.valid),
        "cutoffs_eval": len(plan.evaluation),
        "rows_train": int(frame["cutoff"].isin(plan.train).sum()),
        "rows_valid": int(frame["cutoff"].isin(plan.valid).sum()),
        "rows_eval": len(evaluation),
        "data_hash": data_hash(frame),
    }
    with mlflow.start_run(run_name=f"train-{as_of.isoformat()}") as run:
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "reason": reason,
                "trigger": json.dumps(trigger or {}, sort_keys=True, default=str),
                "feature_service": feature_service,
                "training_as_of": as_of.isoformat(),
                "data_hash": lineage["data_hash"],
            }
        )
        mlflow.log_params(
            {**{f"xgb_{k}": v for k, v in result.params.items()}, "best_iteration": result.best_iteration}
        )
        mlflow.log_params({f"lineage_{k}": v for k, v in lineage.items()})
        mlflow.log_metrics({f"eval_{k}": v for k, v in result.eval_metrics.items() if not np.isnan(v)})
        mlflow.log_metrics({f"baseline_{k}_auc": v for k, v in result.baselines.items() if not np.isnan(v)})
        with tempfile.TemporaryDirectory() as tmp:
            paths = training_plots(
                Path(tmp), y, result.eval_scores, result.booster, result.baselines, evaluation, features
            )
            for p in paths:
                mlflow.log_artifact(str(p), artifact_path="plots")
            (Path(tmp) / "lineage.json").write_text(json.dumps(lineage, indent=2))
            (Path(tmp) / "search.json").write_text(json.dumps(result.search, indent=2))
            mlflow.log_artifact(str(Path(tmp) / "lineage.json"))
            mlflow.log_artifact(str(Path(tmp) / "search.json"))
        signature = infer_signature(example, result.booster.inplace_predict(example.to_numpy()))
        # XGBoost's own JSON: readable by Triton's FIL backend, no pickle anywhere.
        info = mlflow.xgboost.log_model(
            result.booster, name="model", model_format="json", signature=signature, input_example=example
        )
        out = {
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "eval_auc": result.eval_metrics["roc_auc"],
            "baselines": result.baselines,
            "metrics": result.eval_metrics,
            "lineage": lineage,
            "best_iteration": result.best_iteration,
        }
    log.info(
        "trained run %s: eval AUC %.4f (recency baseline %.4f, frequency baseline %.4f) on %d rows",
        out["run_id"],
        out["eval_auc"],
        result.baselines["recency"],
        result.baselines["frequency"],
        lineage["rows_eval"],
    )
    return out


def save_training_frame(frame: pd.DataFrame, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)

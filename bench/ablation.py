"""bench_model.py --ablation: each feature group and training change on/off against the champion.

Every variant is trained as the champion is (train.fit, rolling-origin rounds), with the
champion's chosen parameters fixed (one candidate: the search is not re-run per variant), and
scored on the same evaluation rows. Differences are paired: a bootstrap over the rows (the same
resamples for both models) gives the 95% interval of the AUC and PR-AUC difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from propensity.core.stats import auc
from propensity.features.spec import MODEL_FEATURES, matrix
from propensity.training.train import fit

GROUPS = {
    "btyd (bgnbd_p_alive, bgnbd_expected_30d)": ("bgnbd_p_alive", "bgnbd_expected_30d"),
    "rhythm (recency_gap_ratio, purchase_days)": ("recency_gap_ratio", "purchase_days"),
    "all issue-19 features": MODEL_FEATURES[18:],
}
SAMPLES = 300


def paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 7) -> dict[str, float]:
    """AUC and PR-AUC of a minus b with percentile 95% CIs from one paired bootstrap."""
    rng = np.random.default_rng(seed)
    d_auc, d_pr = [], []
    n = len(y)
    for _ in range(SAMPLES):
        i = rng.integers(0, n, n)
        if y[i].min() == y[i].max():
            continue
        d_auc.append(auc(y[i], a[i]) - auc(y[i], b[i]))
        d_pr.append(average_precision_score(y[i], a[i]) - average_precision_score(y[i], b[i]))
    return {
        "auc": auc(y, a),
        "pr_auc": float(average_precision_score(y, a)),
        "d_auc": auc(y, a) - auc(y, b),
        "d_auc_ci": (float(np.percentile(d_auc, 2.5)), float(np.percentile(d_auc, 97.5))),
        "d_pr": float(average_precision_score(y, a) - average_precision_score(y, b)),
        "d_pr_ci": (float(np.percentile(d_pr, 2.5)), float(np.percentile(d_pr, 97.5))),
    }


def ablate(
    frame: pd.DataFrame, plan, cfg, rows: pd.DataFrame, y: np.ndarray, champion: np.ndarray, params
) -> list:
    base = {k: v for k, v in params.items()}
    fixed = cfg.model_copy(
        update={"xgb_params": base, "selection": cfg.selection.model_copy(update={"max_trials": 1})}
    )
    variants: list[tuple[str, tuple[str, ...], object]] = [
        (f"champion, params fixed ({len(MODEL_FEATURES)} features)", MODEL_FEATURES, fixed)
    ]
    for name, cols in GROUPS.items():
        variants.append((f"- {name}", tuple(f for f in MODEL_FEATURES if f not in cols), fixed))
    variants.append(
        (
            "- rolling-origin selection (early stopping on 1 cutoff, configured params)",
            MODEL_FEATURES,
            cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"enabled": False})}),
        )
    )
    variants.append(
        (
            "+ recency-weighted cutoffs (half-life 90 days)",
            MODEL_FEATURES,
            fixed.model_copy(
                update={"selection": fixed.selection.model_copy(update={"half_life_days": 90.0})}
            ),
        )
    )
    out = []
    for name, features, c in variants:
        booster = fit(frame, features, plan, c, baselines=False).booster
        scores = booster.inplace_predict(matrix(rows, features))
        out.append({"variant": name, "rounds": booster.num_boosted_rounds(), **paired(y, scores, champion)})
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| retailer | variant | rounds | AUC | PR-AUC | ΔAUC vs champion [95% CI] | ΔPR-AUC [95% CI] |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for res in results:
        for v in res.get("ablation", []):
            lines.append(
                f"| {res['retailer']} {res['cutoff']} | {v['variant']} | {v['rounds']} | {v['auc']:.4f} | "
                f"{v['pr_auc']:.4f} | {v['d_auc']:+.4f} [{v['d_auc_ci'][0]:+.4f}, {v['d_auc_ci'][1]:+.4f}] | "
                f"{v['d_pr']:+.4f} [{v['d_pr_ci'][0]:+.4f}, {v['d_pr_ci'][1]:+.4f}] |"
            )
    return "\n".join(lines)


def log_and_print(results: list[dict], workdir: str) -> None:
    """Print the table and log it (and every figure) to an MLflow run of experiment bench_model."""
    text = table(results)
    print("\n" + text)
    try:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
        mlflow.set_experiment("bench_model")
        with mlflow.start_run(run_name="ablation"):
            for res in results:
                for model, value in res["auc"].items():
                    mlflow.log_metric(f"{res['retailer']}_auc_{model}", value)
                for i, v in enumerate(res.get("ablation", [])):
                    mlflow.log_metric(f"{res['retailer']}_ablation_{i}_auc", v["auc"])
                    mlflow.log_metric(f"{res['retailer']}_ablation_{i}_pr_auc", v["pr_auc"])
            mlflow.log_text(text, "ablation.md")
        print(f"logged to MLflow at sqlite:///{workdir}/mlflow.db (experiment bench_model)")
    except Exception as exc:  # the table is printed either way; say why it is not in MLflow
        print(f"MLflow logging failed: {exc}")

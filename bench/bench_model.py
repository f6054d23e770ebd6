"""The champion against the baselines a user would try first, on two retailers, from one run.

Usage: python bench/bench_model.py [--workdir /tmp/bench-model] [--ablation] [--quick]

For each retailer (the shared Online Retail data, and the synthetic second retailer of
tests/fixtures/synthetic_retailer.py) at its last fully observed cutoff T (features as of T,
label = buys in [T, T + 30 days), customers active in the 365 days before T), on the same rows:

* ``recency``: minus days since the last order;
* ``bgnbd``: BG/NBD (training/baselines.py, scipy) fitted on distinct purchase days before T,
  expected purchases in 30 days, the smallest converging penalizer of 0.001/0.01/0.1/0.5;
* ``rfm_xgb``: the issue's plain XGBoost on 12 RFM columns from orders before each cutoff,
  trained on the 12 cutoffs T - 30 - 7k days, k = 0..11, pooled;
* ``pipeline_v1``: the pipeline's model as before issue 19 (early stopping on one validation
  cutoff, 600-round cap) on the cutoff plan of a training run on day T, v1 features;
* ``champion``: the pipeline's model now: train.fit with the configured rolling-origin
  selection on the same plan, today's MODEL_FEATURES, scored on T's snapshot.

Snapshots come from the real Spark feature job (propensity.features.job.customer_features,
local mode) over every weekly cutoff in one pass; validated events from the configured source
mapping plus the validation stage's row rules and dedup (bench/model_data.py).
``--ablation`` adds the table of feature groups and training changes (AUC and PR-AUC on T with
paired bootstrap CIs against the champion), logged to MLflow under ``bench_model``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time

import numpy as np
import pandas as pd
import xgboost as xgb

sys.path.insert(0, os.path.dirname(__file__))
import model_data as md  # noqa: E402
from benchline import bench_line  # noqa: E402

from propensity.core.btyd import fit_bgnbd  # noqa: E402
from propensity.core.cutoffs import plan_cutoffs  # noqa: E402
from propensity.core.stats import auc, expected_calibration_error  # noqa: E402
from propensity.features.spec import MODEL_FEATURES, matrix  # noqa: E402
from propensity.training.train import fit  # noqa: E402

GOAL_MARGIN = 0.02
V1_FEATURES = MODEL_FEATURES[:18]
RFM_PARAMS = dict(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8)


def rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def training_frame(r: md.Retailer, snaps: pd.DataFrame, pipeline_orders: pd.DataFrame) -> pd.DataFrame:
    """Snapshot rows + the pipeline's label (any non-return product order in the horizon)."""
    parts = []
    for cutoff, part in snaps.groupby("cutoff", sort=True):
        part = part.copy()
        part["label"] = md.labels(
            pipeline_orders, part["customer_id"], cutoff, r.settings.features.label_days
        )
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for name in MODEL_FEATURES:
        out[name] = out[name].astype("float64")
    return out


def pipeline_orders(r: md.Retailer) -> pd.DataFrame:
    ev = r.events[(r.events["line_kind"] == "product") & ~r.events["is_return"]]
    orders = ev.groupby(["customer_id", "order_id"], observed=True)["event_time"].min().reset_index()
    orders["day"] = orders["event_time"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return orders


def rfm_xgb(orders: pd.DataFrame, test: dt.date, horizon: int) -> pd.DataFrame:
    from xgboost import XGBClassifier

    train = []
    for k in range(12):
        c = test - dt.timedelta(days=horizon + 7 * k)
        f = md.rfm_frame(orders, c)
        f["y"] = md.labels(orders, f["customer_id"], c, horizon)
        train.append(f)
    tr = pd.concat(train, ignore_index=True)
    te = md.rfm_frame(orders, test)
    cols = [c for c in te.columns if c.startswith("rfm_")]
    model = XGBClassifier(**RFM_PARAMS).fit(tr[cols], tr["y"])
    return pd.DataFrame({"customer_id": te["customer_id"], "rfm_xgb": model.predict_proba(te[cols])[:, 1]})


def bgnbd(orders: pd.DataFrame, test: dt.date, horizon: int) -> tuple[pd.DataFrame, dict]:
    b = md.btyd_frame(orders, test)
    model = fit_bgnbd(b["frequency"], b["recency"], b["T"])
    score = model.expected_purchases(horizon / 7.0, b["frequency"], b["recency"], b["T"])
    info = {"penalizer": model.penalizer, "fit_s": round(model.fit_seconds, 3), "customers": model.customers}
    return pd.DataFrame({"customer_id": b.index, "bgnbd": np.asarray(score)}), info


def old_pipeline(frame: pd.DataFrame, plan, features, cfg) -> xgb.Booster:
    """training/train.py before issue 19: early stopping on the one validation cutoff."""
    old = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"enabled": False})})
    return fit(frame, features, plan, old, baselines=False).booster


def champion(frame: pd.DataFrame, plan, features, cfg, **selection) -> tuple[xgb.Booster, dict]:
    c = cfg.model_copy(update={"selection": cfg.selection.model_copy(update=selection)})
    result = fit(frame, features, plan, c, baselines=False)
    info = {"rounds": result.best_iteration, "params": result.params, "trials": len(result.search)}
    return result.booster, info | {"oof": result.oof}


def calibration(oof: pd.DataFrame | None, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ECE on T of the raw probabilities and of Platt / isotonic maps fitted on the validation
    folds' scores only (never on T)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    out = {"raw": expected_calibration_error(y, scores)}
    if oof is None:
        return out
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    margin = np.log(p / (1 - p))
    platt = LogisticRegression(C=1e6).fit(oof[["margin"]].to_numpy(), oof["label"].to_numpy())
    out["platt"] = expected_calibration_error(y, platt.predict_proba(margin.reshape(-1, 1))[:, 1])
    iso = IsotonicRegression(out_of_bounds="clip").fit(oof["margin"].to_numpy(), oof["label"].to_numpy())
    out["isotonic"] = expected_calibration_error(y, iso.predict(margin))
    oof_p = 1 / (1 + np.exp(-oof["margin"].to_numpy()))
    out["folds_raw"] = expected_calibration_error(oof["label"].to_numpy(), oof_p)
    return out


def evaluate_retailer(r: md.Retailer, workdir: str, ablation: bool, quick: bool) -> dict:
    t0 = time.monotonic()
    cfg = r.settings.training
    if quick:
        cfg = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"max_trials": 1})})
    horizon = r.settings.features.label_days
    test = r.test_cutoff
    plan = plan_cutoffs(r.first_day, test, cfg)
    cache = os.path.join(workdir, f"{r.name}-snapshots-{len(MODEL_FEATURES)}.parquet")
    t_snap = time.monotonic()
    if os.path.exists(cache):
        snaps = pd.read_parquet(cache)
        snaps["cutoff"] = pd.to_datetime(snaps["cutoff"]).dt.date
    else:
        snaps = md.spark_snapshots(r, sorted({*plan.all, test}))
        snaps.to_parquet(cache)
    snap_s = time.monotonic() - t_snap
    frame = training_frame(r, snaps[snaps["cutoff"] != test], pipeline_orders(r))
    orders = md.purchases(r)

    # The evaluation rows: T's snapshot population, the issue's label (price > 0 lines).
    rows = snaps[snaps["cutoff"] == test].reset_index(drop=True)
    for name in MODEL_FEATURES:
        rows[name] = rows[name].astype("float64")
    rfm = rfm_xgb(orders, test, horizon)
    bg, bg_info = bgnbd(orders, test, horizon)
    rows = rows.merge(rfm, on="customer_id", how="inner").merge(bg, on="customer_id", how="inner")
    y = md.labels(orders, rows["customer_id"], test, horizon)
    scores = {"recency": -rows["recency_days"].to_numpy(), "bgnbd": rows["bgnbd"].to_numpy()}
    scores["rfm_xgb"] = rows["rfm_xgb"].to_numpy()
    t_fit = time.monotonic()
    scores["pipeline_v1"] = old_pipeline(frame, plan, V1_FEATURES, cfg).inplace_predict(
        matrix(rows, V1_FEATURES)
    )
    t_v1 = time.monotonic() - t_fit
    t_fit = time.monotonic()
    booster, info = champion(frame, plan, MODEL_FEATURES, cfg)
    scores["champion"] = booster.inplace_predict(matrix(rows, MODEL_FEATURES))
    t_champ = time.monotonic() - t_fit
    out = {
        "retailer": r.name,
        "cutoff": test.isoformat(),
        "rows": len(y),
        "positive_rate": float(y.mean()),
        "auc": {k: auc(y, v) for k, v in scores.items()},
        "ece_champion": expected_calibration_error(y, scores["champion"]),
        "calibration": calibration(info.pop("oof"), scores["champion"], y),
        "bgnbd": bg_info,
        "champion": info,
        "seconds": {"snapshots": snap_s, "pipeline_v1_fit": t_v1, "champion_fit": t_champ},
        "plan": {"train": len(plan.train), "valid": len(plan.valid), "eval": len(plan.evaluation)},
    }
    if ablation:
        from ablation import ablate

        out["ablation"] = ablate(frame, plan, cfg, rows, y, scores["champion"], info["params"])
    out["seconds"]["total"] = time.monotonic() - t0
    return out


def print_table(results: list[dict]) -> None:
    models = ["recency", "bgnbd", "rfm_xgb", "pipeline_v1", "champion"]
    print(f"\n{'retailer':<20} {'cutoff':<11} {'rows':>6} {'pos':>6} " + " ".join(f"{m:>11}" for m in models))
    for res in results:
        a = res["auc"]
        print(
            f"{res['retailer']:<20} {res['cutoff']:<11} {res['rows']:>6} {res['positive_rate']:>6.3f} "
            + " ".join(f"{a[m]:>11.4f}" for m in models)
        )
    for res in results:
        a = res["auc"]
        best = max(a["bgnbd"], a["rfm_xgb"])
        print(
            f"{res['retailer']}: champion - BG/NBD {a['champion'] - a['bgnbd']:+.4f} (goal >= +{GOAL_MARGIN}), "
            f"champion - RFM XGB {a['champion'] - a['rfm_xgb']:+.4f} (goal >= 0); "
            f"ECE on T {json.dumps({k: round(v, 4) for k, v in res['calibration'].items()})}; "
            f"BG/NBD penalizer {res['bgnbd']['penalizer']}, fit {res['bgnbd']['fit_s']}s; "
            f"champion {res['champion']['rounds']} rounds, {res['champion']['trials']} candidates; "
            f"seconds {json.dumps({k: round(v, 1) for k, v in res['seconds'].items()})}"
        )
        print(
            bench_line(
                f"model AUC {res['retailer']} (champion vs best baseline)",
                a["champion"],
                best,
                f"champion >= BG/NBD + {GOAL_MARGIN} and >= RFM XGB",
                a["champion"] >= a["bgnbd"] + GOAL_MARGIN and a["champion"] >= a["rfm_xgb"],
                "AUC",
            )
        )


def results_section(results: list[dict], own: float, kids: float, wall: float) -> str:
    """bench/RESULTS.md's model section: the comparison and the ablation, from this run."""
    from ablation import table

    models = ["recency", "bgnbd", "rfm_xgb", "pipeline_v1", "champion"]
    lines = [
        "## Model quality (bench_model.py)",
        "",
        f"`python bench/bench_model.py --ablation --write-results` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
        f"(wall {wall:.0f} s; peak RSS {own:.0f} MB, Spark JVM {kids:.0f} MB). AUC on the customers active in "
        "the 365 days before the last fully observed cutoff T, label = buys in [T, T + 30 days), every "
        "model on the same rows. Goal: champion >= BG/NBD + 0.02 and >= RFM XGBoost.",
        "",
        "| retailer | T | rows | positive | " + " | ".join(models) + " | goal met? |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in models) + " | --- |",
    ]
    for res in results:
        a = res["auc"]
        met = a["champion"] >= a["bgnbd"] + GOAL_MARGIN and a["champion"] >= a["rfm_xgb"]
        lines.append(
            f"| {res['retailer']} | {res['cutoff']} | {res['rows']} | {res['positive_rate']:.3f} | "
            + " | ".join(f"{a[m]:.4f}" for m in models)
            + f" | {'yes' if met else '**no**'} |"
        )
    if any("ablation" in r for r in results):
        lines += ["", "Ablation (paired bootstrap over the rows, 300 resamples):", "", table(results)]
    return "\n".join(lines) + "\n"


def write_results(section: str, path: str) -> None:
    text = open(path).read() if os.path.exists(path) else ""
    head = text.split("## Model quality (bench_model.py)", 1)[0].rstrip("\n")
    with open(path, "w") as fh:
        fh.write((head + "\n\n" if head else "") + section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/bench-model")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--quick", action="store_true", help="no hyperparameter search (rounds only)")
    parser.add_argument("--only", choices=["online_retail", "synthetic_retailer"])
    parser.add_argument("--write-results", action="store_true", help="write the section of bench/RESULTS.md")
    parser.add_argument("--render", help="only write the section from a run's results.json")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    results_md = os.path.join(os.path.dirname(__file__), "RESULTS.md")
    if args.render:
        with open(args.render) as fh:
            saved = json.load(fh)
        run = saved[0].get("run", {"rss_mb": 0, "jvm_rss_mb": 0, "wall_s": 0})
        write_results(results_section(saved, run["rss_mb"], run["jvm_rss_mb"], run["wall_s"]), results_md)
        return 0
    started = time.monotonic()
    results = []
    for name, load in (
        ("online_retail", md.shared_retailer),
        ("synthetic_retailer", lambda: md.synthetic_retailer(args.workdir)),
    ):
        if args.only and args.only != name:
            continue
        results.append(evaluate_retailer(load(), args.workdir, args.ablation, args.quick))
    print_table(results)
    if args.ablation:
        from ablation import log_and_print

        log_and_print(results, args.workdir)
    own, kids = rss_mb()
    wall = time.monotonic() - started
    print(
        f"\npeak RSS: bench process {own:.0f} MB, largest child (Spark JVM) {kids:.0f} MB; wall {wall:.0f}s"
    )
    for res in results:
        res["run"] = {"rss_mb": own, "jvm_rss_mb": kids, "wall_s": wall}
    if args.write_results:
        write_results(results_section(results, own, kids, wall), results_md)
    with open(os.path.join(args.workdir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

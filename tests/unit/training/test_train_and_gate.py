"""Training split, the model, the gate's checks and the registry's alias moves (real MLflow, SQLite)."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

from propensity.core.cutoffs import cutoff_grid, plan_cutoffs
from propensity.core.settings import GateThresholds, TrainingSettings
from propensity.features.spec import MODEL_FEATURES
from propensity.training.evaluate import compare
from propensity.training.gate import decide, render_markdown
from propensity.training.registry import CHALLENGER, CHAMPION, PromotionConflict, Registry
from propensity.training.train import fit


def test_cutoffs_are_mondays_up_to_the_latest_matured_one():
    cfg = TrainingSettings()
    plan = plan_cutoffs(dt.date(2010, 12, 1), dt.date(2011, 12, 9), cfg)
    # 9 Dec - 30 days = 9 Nov (a Wednesday): the latest matured Monday is 7 Nov.
    assert plan.evaluation == [dt.date(2011, 10, 31), dt.date(2011, 11, 7)]
    assert plan.valid == [dt.date(2011, 10, 24)]
    assert plan.train[0] == dt.date(2011, 3, 7)  # first Monday at least 90 days after 1 Dec 2010
    assert plan.train[-1] == dt.date(2011, 10, 17)
    assert all(c.weekday() == 0 for c in plan.all)
    assert all((b - a).days == 7 for a, b in zip(plan.all, plan.all[1:], strict=False))
    assert max(plan.all) + dt.timedelta(days=30) <= dt.date(2011, 12, 9)
    # A later training date reuses the same grid: only new cutoffs are added.
    later = plan_cutoffs(dt.date(2010, 12, 1), dt.date(2011, 12, 10), cfg)
    assert set(plan.all) <= set(later.all)
    assert cutoff_grid(dt.date(2010, 12, 1), dt.date(2011, 12, 10), cfg)[: len(plan.all)] == plan.all


def test_too_little_history_is_a_clear_error():
    with pytest.raises(ValueError, match="only 1 matured weekly cutoffs"):
        plan_cutoffs(dt.date(2011, 1, 1), dt.date(2011, 5, 5), TrainingSettings())


def synthetic_frame(
    cutoffs: list[dt.date], n: int = 600, seed: int = 0, flip_abroad: bool = False
) -> pd.DataFrame:
    """Customers whose next-30-day purchase depends on recency and frequency, plus noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in cutoffs:
        f = pd.DataFrame({name: rng.gamma(2.0, 10.0, n) for name in MODEL_FEATURES})
        f["recency_days"] = rng.integers(0, 365, n)
        f["orders_90d"] = rng.poisson(2, n)
        f["tenure_days"] = rng.integers(0, 365, n)
        f["is_home_country"] = (rng.random(n) < 0.8).astype(float)
        logit = 1.5 - f["recency_days"] / 60 + 0.6 * f["orders_90d"] + rng.normal(0, 0.7, n)
        f["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        f["customer_id"] = [f"c{i}" for i in range(n)]
        f["cutoff"] = c
        f["country"] = np.where(f["is_home_country"] > 0, "United Kingdom", "France")
        parts.append(f)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def plan():
    return plan_cutoffs(dt.date(2010, 12, 1), dt.date(2011, 6, 30), TrainingSettings())


def test_model_beats_the_baselines_on_a_learnable_signal(plan):
    frame = synthetic_frame(plan.all)
    result = fit(frame, MODEL_FEATURES, plan, TrainingSettings())
    assert result.eval_metrics["roc_auc"] > 0.80
    assert result.eval_metrics["roc_auc"] > result.baselines["recency"] > 0.6
    assert 0 < result.eval_metrics["brier"] < 0.25
    assert result.best_iteration == result.booster.num_boosted_rounds() < TrainingSettings().num_boost_round


def test_gate_refuses_a_model_that_wins_overall_but_loses_a_key_segment(plan):
    frame = synthetic_frame(plan.all)
    evaluation = frame[frame["cutoff"].isin(plan.evaluation)].reset_index(drop=True)
    truth = 1 / (1 + np.exp(-(1.5 - evaluation["recency_days"] / 60 + 0.6 * evaluation["orders_90d"])))
    rng = np.random.default_rng(1)
    champion = truth + rng.normal(0, 0.6, len(truth))
    challenger = truth + rng.normal(0, 0.01, len(truth))
    abroad = evaluation["is_home_country"].to_numpy() < 0.5
    challenger[abroad] = rng.random(abroad.sum())  # useless abroad
    cfg = TrainingSettings(segment_min_size=50)
    comparison = compare(evaluation, challenger, champion.to_numpy(), cfg)
    report = decide(
        comparison,
        {"error_rate": 0.0, "p99_ms": 1.0, "psi": 0.01, "rank_corr": 0.95, "rows": 10, "source": "t"},
        {"recency": 0.7},
        cfg.gate,
    )
    checks = {c["name"]: c for c in report["checks"]}
    assert comparison["challenger_auc"] > comparison["champion_auc"] * 1.005
    assert checks["auc_gain"]["passed"]
    assert not checks["segment country=abroad"]["passed"]
    assert checks["segment country=abroad"]["observed"] > 0.02
    assert checks["segment country=home"]["passed"]
    assert report["passed"] is False
    assert "| segment country=abroad |" in render_markdown(report)


def test_gate_refuses_when_the_shadow_test_fails():
    comparison = {
        "challenger_auc": 0.80,
        "champion_auc": 0.70,
        "segments": [],
        "bootstrap": {"ci_low": 0.05, "ci_high": 0.15},
    }
    shadow = {
        "error_rate": 0.0,
        "p99_ms": 2.0,
        "psi": 0.9,
        "rank_corr": 0.3,
        "rows": 100,
        "source": "prediction log",
    }
    report = decide(comparison, shadow, {"recency": 0.6}, GateThresholds())
    failed = sorted(c["name"] for c in report["checks"] if not c["passed"])
    assert failed == ["shadow_psi", "shadow_rank_corr"]
    assert report["passed"] is False


def test_first_model_must_beat_the_recency_baseline():
    comparison = {"challenger_auc": 0.74, "champion_auc": None, "segments": []}
    shadow = {"error_rate": 0.0, "p99_ms": 1.0, "rows": 10, "source": "snapshot"}
    assert decide(comparison, shadow, {"recency": 0.70}, GateThresholds())["passed"] is True
    refused = decide(comparison, shadow, {"recency": 0.76}, GateThresholds(enforce_best_baseline=True))
    failed = [c["name"] for c in refused["checks"] if not c["passed"]]
    assert failed == ["beats_recency_baseline", "beats_best_baseline"]


def test_first_model_must_beat_the_best_baseline_and_the_report_lists_them():
    comparison = {"challenger_auc": 0.74, "champion_auc": None, "segments": []}
    shadow = {"error_rate": 0.0, "p99_ms": 1.0, "rows": 10, "source": "snapshot"}
    baselines = {"recency": 0.67, "frequency": 0.66, "bgnbd": 0.75, "rfm_xgb": 0.73}
    enforced = GateThresholds(enforce_best_baseline=True)
    refused = decide(comparison, shadow, baselines, enforced)
    checks = {c["name"]: c for c in refused["checks"]}
    assert [n for n, c in checks.items() if not c["passed"]] == ["beats_best_baseline"]
    assert checks["beats_best_baseline"]["threshold"] == 0.75
    assert "bgnbd" in checks["beats_best_baseline"]["detail"]
    text = render_markdown(refused)
    assert "bgnbd 0.75" in text and "rfm_xgb 0.73" in text and "| beats_best_baseline |" in text
    # A baseline that could not be scored is named, and the best scored one is used.
    passed = decide(comparison, shadow, {**baselines, "bgnbd": float("nan")}, enforced)
    best = next(c for c in passed["checks"] if c["name"] == "beats_best_baseline")
    assert passed["passed"] is True and best["threshold"] == 0.73 and "not scored: bgnbd" in best["detail"]
    # The same after an XCom (NaN travels as None): named, not used, and the report says so.
    crossed = decide(comparison, shadow, {**baselines, "bgnbd": None}, enforced)
    best = next(c for c in crossed["checks"] if c["name"] == "beats_best_baseline")
    assert crossed["passed"] is True and best["threshold"] == 0.73 and "not scored: bgnbd" in best["detail"]
    assert crossed["baselines"]["bgnbd"] is None and "bgnbd not scored" in render_markdown(crossed)
    # Not enforced (the default): reported with verdict "warn", the gate decides on the rest.
    advisory = decide(comparison, shadow, baselines, GateThresholds())
    best = next(c for c in advisory["checks"] if c["name"] == "beats_best_baseline")
    assert advisory["passed"] is True and best["met"] is False and "not enforced" in best["detail"]
    assert "| beats_best_baseline | 0.7400 | 0.7500 | warn |" in render_markdown(advisory)


# -- registry with real MLflow -------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory):
    """One MLflow store per module: creating its SQLite schema takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def registry_settings(make_settings, mlflow_dir, request, tmp_path):
    return make_settings(
        serving={"repository": str(tmp_path / "models")},
        training={
            "mlflow_tracking_uri": f"sqlite:///{mlflow_dir}/mlflow.db",
            "mlflow_artifact_root": str(mlflow_dir / "artifacts"),
            "audit_db_url": f"sqlite:///{mlflow_dir}/audit.db",
            "model_name": f"test_{request.node.name[:40]}",
        },
    )


@pytest.fixture(scope="module")
def logged_runs(mlflow_dir):
    """Three small models logged once to the module's MLflow store: (model_uri, data_hash)."""
    from propensity.core.settings import committed_settings
    from propensity.training.train import log_training_run

    settings = committed_settings(
        zone_root=str(mlflow_dir / "zones"),
        cache_dir=str(mlflow_dir / "cache"),
        training={
            "mlflow_tracking_uri": f"sqlite:///{mlflow_dir}/mlflow.db",
            "mlflow_artifact_root": str(mlflow_dir / "artifacts"),
            "audit_db_url": f"sqlite:///{mlflow_dir}/audit.db",
            "num_boost_round": 20,
        },
    )
    plan = plan_cutoffs(dt.date(2010, 12, 1), dt.date(2011, 6, 30), TrainingSettings())
    runs = []
    for seed in (0, 1, 2):
        frame = synthetic_frame(plan.all, n=200, seed=seed)
        result = fit(frame, MODEL_FEATURES, plan, settings.training)
        run = log_training_run(
            settings,
            frame,
            MODEL_FEATURES,
            plan,
            result,
            as_of=dt.date(2011, 6, 30),
            feature_service="propensity_v1",
            reason="test",
        )
        runs.append((run["model_uri"], run["lineage"]["data_hash"]))
    return runs


def register_all(settings, logged_runs, count: int) -> list[str]:
    """Register the first ``count`` logged models under this test's own model name."""
    registry = Registry(settings)
    return [
        registry.register(
            uri, {"data_hash": h, "training_as_of": f"2011-06-{i + 1:02d}"}, logical_date="2011-06-30"
        )
        for i, (uri, h) in enumerate(logged_runs[:count])
    ]


def test_promotion_rollback_and_the_audit_trail(registry_settings, logged_runs):
    v1, v2 = register_all(registry_settings, logged_runs, 2)
    registry = Registry(registry_settings)
    assert registry.alias_version(CHALLENGER) == v2
    registry.promote(
        v1, expected_champion=None, report={"passed": True}, reason="first", logical_date="2011-06-30"
    )
    registry.promote(
        v2, expected_champion=v1, report={"passed": True}, reason="better", logical_date="2011-07-07"
    )
    # Idempotent: promoting the champion again changes nothing.
    assert (
        registry.promote(v2, expected_champion=v1, report={}, reason="again", logical_date="2011-07-07")[
            "promoted"
        ]
        is False
    )
    assert str(registry.client.get_model_version_by_alias(registry.name, CHAMPION).version) == v2
    assert registry.client.get_model_version(registry.name, v1).tags["archived"] == "true"

    assert registry.rollback(reason="bad live metrics", logical_date="2011-07-08") == {
        "champion": v1,
        "previous": v2,
    }
    assert str(registry.client.get_model_version_by_alias(registry.name, CHAMPION).version) == v1
    # A fresh Registry (a restart) reads the same history.
    moves = [
        (r["action"], r["from_version"], r["to_version"])
        for r in Registry(registry_settings).audit()
        if r["alias"] == CHAMPION
    ]
    assert moves == [("rollback", v2, v1), ("promote", v1, v2), ("promote", None, v1)]


def test_deploy_serves_the_champion_once_and_a_rollback_redeploys_the_previous_one(
    registry_settings, logged_runs
):
    from propensity.serving.backends import InProcessBackend
    from propensity.serving.deploy import parity_sample
    from propensity.serving.manifest import read_deployment
    from propensity.training.steps import (
        deploy_champion,
        deploy_shadow,
        retire_challenger_shadow,
        rollback_champion,
    )

    v1, v2 = register_all(registry_settings, logged_runs, 2)
    registry = Registry(registry_settings)
    day = dt.date(2011, 6, 30)
    # The first model has no champion to be shadowed beside: nothing to deploy, nothing to retire.
    assert deploy_shadow(registry_settings, day, v1)["detail"] == "no champion deployed to shadow beside"
    assert retire_challenger_shadow(registry_settings, v1)["status"] == "noop"
    registry.promote(v1, expected_champion=None, report={}, reason="first", logical_date="2011-06-30")
    assert deploy_champion(registry_settings, day)["deployed"] is True
    # Already serving: nothing is written again (the manifest keeps one deploy in its history).
    again = deploy_champion(registry_settings, day)
    assert again == {"deployed": False, "detail": f"v{v1} already serving", "champion": v1}
    assert [e["version"] for e in read_deployment(registry_settings)["history"]] == [v1]

    # The next challenger is shadowed beside the champion, then promoted: it leaves the shadow role.
    assert deploy_shadow(registry_settings, day, v2)["shadow"] == v2
    assert read_deployment(registry_settings)["shadow"]["version"] == v2
    registry.promote(v2, expected_champion=v1, report={}, reason="better", logical_date="2011-07-07")
    assert deploy_champion(registry_settings, dt.date(2011, 7, 7))["champion"] == v2
    assert read_deployment(registry_settings)["shadow"] is None
    # One rollback mechanism: the registry moves the alias back, the deploy step serves it.
    rollback_champion(registry_settings, dt.date(2011, 7, 8), reason="bad live metrics")
    assert deploy_champion(registry_settings, dt.date(2011, 7, 8))["champion"] == v1
    assert read_deployment(registry_settings)["champion"]["version"] == v1
    booster = registry.load_booster(v1)
    x = parity_sample(booster, 64)
    served = InProcessBackend.from_repository(registry_settings, v1).predict(x)
    np.testing.assert_allclose(served, booster.inplace_predict(x), atol=0)


def test_two_concurrent_promotions_cannot_both_win(registry_settings, logged_runs):
    v1, v2, v3 = register_all(registry_settings, logged_runs, 3)
    Registry(registry_settings).promote(
        v1, expected_champion=None, report={}, reason="first", logical_date="2011-06-30"
    )
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def race(version: str) -> None:
        registry = Registry(registry_settings)
        barrier.wait()
        try:
            registry.promote(
                version, expected_champion=v1, report={}, reason=f"race {version}", logical_date="2011-07-07"
            )
            outcomes[version] = "won"
        except PromotionConflict:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=race, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(v for v, o in outcomes.items() if o == "won")
    registry = Registry(registry_settings)
    assert registry.alias_version(CHAMPION) == winner
    assert str(registry.client.get_model_version_by_alias(registry.name, CHAMPION).version) == winner
    promotes = [r for r in registry.audit() if r["action"] == "promote" and r["from_version"] == v1]
    assert [r["to_version"] for r in promotes] == [winner]


def test_a_worse_model_is_never_promoted(registry_settings, plan, logged_runs):
    from propensity.training.steps import promote_challenger

    frame = synthetic_frame(plan.all)
    evaluation = frame[frame["cutoff"].isin(plan.evaluation)].reset_index(drop=True)
    good = fit(frame, MODEL_FEATURES, plan, TrainingSettings())
    shuffled = frame.assign(label=np.random.default_rng(3).permutation(frame["label"].to_numpy()))
    worse = fit(shuffled, MODEL_FEATURES, plan, TrainingSettings())
    from propensity.features.spec import matrix

    x = matrix(evaluation, MODEL_FEATURES)
    comparison = compare(
        evaluation, worse.booster.inplace_predict(x), good.booster.inplace_predict(x), TrainingSettings()
    )
    report = decide(
        comparison,
        {"error_rate": 0.0, "p99_ms": 1.0, "rows": 1, "source": "t"},
        worse.baselines,
        GateThresholds(),
    )
    assert report["passed"] is False
    assert comparison["bootstrap"]["ci_high"] < 0  # clearly worse, not noise
    (v1,) = register_all(registry_settings, logged_runs, 1)
    report |= {"champion_version": None}
    out = promote_challenger(
        registry_settings, dt.date(2011, 6, 30), v1, report, dry_run=False, reason="test"
    )
    assert out["promoted"] is False and "auc_gain" in out["detail"]
    registry = Registry(registry_settings)
    assert registry.alias_version(CHAMPION) is None
    assert registry.audit()[0]["action"] == "refuse"


def test_tenure_bands_come_from_config():
    import pandas as pd

    from propensity.training.evaluate import segments, tenure_bands

    assert [name for _, _, name in tenure_bands([90, 270])] == ["<90d", "90-270d", "270d+"]
    frame = pd.DataFrame({"tenure_days": [10, 100, 300, 45], "spend_365d": [1.0, 2.0, 3.0, 4.0]})
    masks = segments(frame, [30, 60])
    assert masks["tenure=<30d"].tolist() == [True, False, False, False]
    assert masks["tenure=30-60d"].tolist() == [False, False, False, True]
    assert masks["tenure=60d+"].tolist() == [False, True, True, False]
    assert not any(k.startswith("tenure=") and "270" in k for k in masks)

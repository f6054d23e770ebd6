"""The detectors on synthetic windows, run by the real alibi-detect in the drift venv."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from propensity.core.settings import DriftSettings
from propensity.monitoring.detectors import corrected_threshold
from propensity.monitoring.policy import decide

N = 20_000
COUNTRIES = ["uk", "de", "fr", "nl"]


def _features(
    rng: np.random.Generator,
    n: int,
    *,
    recency_scale: float = 1.0,
    frequency_shift: float = 0.0,
    country_p: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1),
) -> dict[str, list[Any]]:
    return {
        "recency": (rng.gamma(2.0, 20.0, n) * recency_scale).tolist(),
        "frequency": (rng.normal(0.0, 1.0, n) + frequency_shift).tolist(),
        "orders_90d": rng.poisson(2.0, n).astype(float).tolist(),
        "monetary": rng.lognormal(4.0, 1.0, n).tolist(),
        "tenure": rng.uniform(0, 365, n).tolist(),
        "country": rng.choice(COUNTRIES, n, p=country_p).tolist(),
    }


def _scored(rng: np.random.Generator, n: int, a: float = 2.0, b: float = 5.0) -> list[float]:
    return rng.beta(a, b, n).tolist()


def _matured(rng: np.random.Generator, n: int, *, informative: bool) -> dict[str, list[Any]]:
    score = rng.beta(2.0, 5.0, n)
    # Informative labels follow the score (a calibrated model); degraded ones ignore it.
    p = score if informative else np.full(n, score.mean())
    return {"score": score.tolist(), "label": (rng.random(n) < p).astype(int).tolist()}


def _reference_auc() -> float:
    rng = np.random.default_rng(99)
    m = _matured(rng, 200_000, informative=True)
    return float(roc_auc_score(m["label"], m["score"]))


def _window(seed: int, **current: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    reference = _features(rng, N) | {"score": _scored(rng, N)}
    snapshot = _features(rng, N, **current.pop("snapshot", {}))
    served = _features(rng, 5_000) | {"score": _scored(rng, 5_000, *current.pop("score_ab", (2.0, 5.0)))}
    return {
        "reference": reference,
        "snapshot": snapshot,
        "served": served,
        "matured": _matured(rng, 3_000, informative=current.pop("informative", True)),
        "reference_auc": _reference_auc(),
        "feature_columns": ["recency", "frequency", "orders_90d", "monetary", "tenure", "country"],
    }


PARAMS = DriftSettings(categorical_features=["country"]).model_dump()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, drift_venv) -> dict[str, Any]:
    scenarios = {
        "stable": {"window": _window(1), "params": PARAMS},
        "shifted": {"window": _window(2, snapshot={"recency_scale": 1.6}), "params": PARAMS},
        "shifted_fdr": {
            "window": _window(2, snapshot={"recency_scale": 1.6}),
            "params": PARAMS | {"correction": "fdr"},
        },
        "shifted_cvm": {
            "window": _window(2, snapshot={"recency_scale": 1.6}),
            "params": PARAMS | {"numeric_test": "cvm", "effect_size": "wasserstein"},
        },
        # 0.06 sd: significant at n=20k, but far too small to matter (PSI ~0.004).
        "tiny_shift": {"window": _window(3, snapshot={"frequency_shift": 0.06}), "params": PARAMS},
        "country_mix": {"window": _window(4, snapshot={"country_p": (0.4, 0.3, 0.2, 0.1)}), "params": PARAMS},
        "degraded_labels": {"window": _window(5, informative=False), "params": PARAMS},
        "score_shift": {"window": _window(6, score_ab=(4.0, 3.0)), "params": PARAMS},
    }
    return drift_venv(scenarios, tmp_path_factory.mktemp("drift"))


DAY = dt.date(2011, 6, 1)
POLICY = DriftSettings(categorical_features=["country"])


def test_stable_window_does_not_trigger(results: dict[str, Any]) -> None:
    checks = results["stable"]
    for source in ("snapshot", "served"):
        assert checks["data"][source]["drifted_features"] == []
        assert checks["data"][source]["n_features"] == 6
    assert not checks["prediction"]["drift"]
    assert checks["concept"]["available"] and not checks["concept"]["drift"]
    verdict = decide(checks, POLICY, DAY)
    assert verdict["drift"] is False and verdict["trigger"] is False
    assert verdict["severity"] == "none" and verdict["reason"] == "no_drift"


def test_shifted_feature_triggers_with_its_name(results: dict[str, Any]) -> None:
    checks = results["shifted"]
    snap = checks["data"]["snapshot"]
    assert snap["drifted_features"] == ["recency"]
    assert snap["threshold"] == pytest.approx(0.05 / 6)  # Bonferroni over the 6 features
    recency = snap["features"]["recency"]
    assert recency["psi"] > 0.2 and recency["p_value"] < 1e-6
    assert recency["cur_mean"] / recency["ref_mean"] == pytest.approx(1.6, rel=0.05)
    verdict = decide(checks, POLICY, DAY)
    assert verdict["trigger"] is True and verdict["severity"] == "moderate"
    assert verdict["reasons"] == ["data_drift"]
    assert verdict["drifted_features"] == ["recency"]
    assert any(d.startswith("recency (snapshot)") for d in verdict["details"])


def test_fdr_and_cvm_agree_on_the_shifted_feature(results: dict[str, Any]) -> None:
    fdr = results["shifted_fdr"]["data"]["snapshot"]
    assert fdr["correction"] == "fdr" and fdr["drifted_features"] == ["recency"]
    cvm = results["shifted_cvm"]["data"]["snapshot"]
    assert cvm["features"]["recency"]["test"] == "cvm"
    assert cvm["drifted_features"] == ["recency"]
    assert cvm["features"]["recency"]["wasserstein"] > 0.1


def test_significant_but_tiny_shift_is_not_drift(results: dict[str, Any]) -> None:
    freq = results["tiny_shift"]["data"]["snapshot"]["features"]["frequency"]
    assert freq["significant"] is True  # the test alone would raise an alarm ...
    assert freq["psi"] < 0.02 and freq["drifted"] is False  # ... the effect size vetoes it
    assert decide(results["tiny_shift"], POLICY, DAY)["trigger"] is False


def test_categorical_mix_shift_is_caught_by_chi_square(results: dict[str, Any]) -> None:
    country = results["country_mix"]["data"]["snapshot"]["features"]["country"]
    assert country["kind"] == "categorical" and country["test"] == "chi2"
    assert country["drifted"] is True and country["psi"] > 0.2
    assert results["country_mix"]["data"]["snapshot"]["drifted_features"] == ["country"]


def test_degraded_labels_are_severe_concept_drift(results: dict[str, Any]) -> None:
    concept = results["degraded_labels"]["concept"]
    assert concept["reference_auc"] > 0.7
    assert concept["realised_auc"] == pytest.approx(0.5, abs=0.04)
    assert concept["auc_drift"] is True and concept["severe"] is True
    verdict = decide(results["degraded_labels"], POLICY, DAY)
    assert verdict["trigger"] is True and verdict["severity"] == "severe"
    assert verdict["reasons"] == ["concept_drift"]
    # Healthy labels of the same model: realised AUC matches the evaluation AUC.
    healthy = results["stable"]["concept"]
    assert healthy["realised_auc"] == pytest.approx(healthy["reference_auc"], abs=0.03)
    assert healthy["ece"] < 0.05


def test_score_distribution_shift_is_prediction_drift(results: dict[str, Any]) -> None:
    pred = results["score_shift"]["prediction"]
    assert pred["drift"] is True and pred["psi"] > 0.2
    assert pred["cur_mean"] == pytest.approx(4 / 7, abs=0.02)
    verdict = decide(results["score_shift"], POLICY, DAY)
    assert "prediction_drift" in verdict["reasons"] and verdict["trigger"] is True


def test_corrections() -> None:
    p = [0.001, 0.004, 0.03, 0.2]
    assert corrected_threshold(p, 0.05, "bonferroni") == 0.0125
    with pytest.raises(ValueError, match="unknown correction"):
        corrected_threshold(p, 0.05, "holm")
    assert corrected_threshold([0.03], 0.05, "bonferroni") == 0.05  # one test: nothing to correct

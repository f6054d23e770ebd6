"""The policy: thresholds as data, one verdict, and a cooldown read as of the logical date."""

from __future__ import annotations

import datetime as dt
from typing import Any

from propensity.core.settings import DriftSettings
from propensity.core.storage import open_store
from propensity.monitoring.policy import decide, decide_and_record, read_history, triggers_as_of

POLICY = DriftSettings(cooldown_days=7)


def _feature(name: str, drifted: bool) -> dict[str, Any]:
    return {
        "test": "ks",
        "p_value": 1e-12 if drifted else 0.4,
        "psi": 0.45 if drifted else 0.01,
        "wasserstein": 0.3 if drifted else 0.01,
        "drifted": drifted,
    }


def checks(drifted: tuple[str, ...] = (), auc_drop: float | None = None) -> dict[str, Any]:
    """Detector output shaped like ``propensity.monitoring.detectors.run_checks``'s."""
    names = ("recency", "frequency", "monetary")
    concept: dict[str, Any] = {"available": False, "why": "no labels yet"}
    if auc_drop is not None:
        concept = {
            "available": True,
            "realised_auc": 0.80 - auc_drop,
            "reference_auc": 0.80,
            "auc_drop": auc_drop,
            "n_matured": 1000,
            "ece": 0.02,
            "drift": auc_drop >= POLICY.auc_drop,
            "severe": auc_drop >= POLICY.severe_auc_drop,
        }
    return {
        "data": {
            "snapshot": {
                "threshold": 0.05 / 3,
                "features": {n: _feature(n, n in drifted) for n in names},
                "drifted_features": list(drifted),
            }
        },
        "prediction": {"available": False, "drift": False},
        "concept": concept,
    }


def test_thresholds_are_data() -> None:
    two = checks(("recency", "monetary"))
    assert decide(two, POLICY, dt.date(2011, 5, 2))["trigger"] is True
    strict = POLICY.model_copy(update={"min_drifted_features": 3})
    verdict = decide(two, strict, dt.date(2011, 5, 2))
    assert verdict["trigger"] is False and verdict["drift"] is False
    assert verdict["signals"]["data"]["value"] == 2 and verdict["signals"]["data"]["threshold"] == 3
    # A signal the policy does not let trigger is reported but does not retrain.
    no_data = POLICY.model_copy(update={"trigger_on": ["concept"]})
    verdict = decide(two, no_data, dt.date(2011, 5, 2))
    assert verdict["drift"] is True and verdict["trigger"] is False and verdict["severity"] == "low"


def test_cooldown_holds_and_lapses(tmp_path) -> None:
    store = open_store(str(tmp_path / "zones"))
    shifted = checks(("recency",))
    first = decide_and_record(shifted, POLICY, dt.date(2011, 11, 3), store)
    assert first["trigger"] is True and first["cooldown"]["last_trigger"] is None

    again = decide_and_record(shifted, POLICY, dt.date(2011, 11, 6), store)
    assert again["drift"] is True and again["trigger"] is False
    assert again["cooldown"] == {
        "days": 7,
        "last_trigger": "2011-11-03",
        "days_since": 3,
        "active": True,
        "overridden": False,
    }
    assert any(d.startswith("cooldown: last trigger 2011-11-03") for d in again["details"])

    # Moderate concept drift does not break the cooldown either ...
    assert decide_and_record(checks(auc_drop=0.06), POLICY, dt.date(2011, 11, 7), store)["trigger"] is False
    # ... severe concept drift does.
    severe = decide_and_record(checks(auc_drop=0.15), POLICY, dt.date(2011, 11, 8), store)
    assert severe["trigger"] is True and severe["severity"] == "severe"
    assert severe["cooldown"]["overridden"] is True

    # 7 days after the last trigger (11-08) the cooldown has lapsed.
    assert decide_and_record(shifted, POLICY, dt.date(2011, 11, 14), store)["trigger"] is False
    assert decide_and_record(shifted, POLICY, dt.date(2011, 11, 15), store)["trigger"] is True
    dates = [e["date"] for e in read_history(store, POLICY.history_path)["triggers"]]
    assert dates == ["2011-11-03", "2011-11-08", "2011-11-15"]


def test_rerun_and_backfill_give_the_scheduled_verdict(tmp_path) -> None:
    store = open_store(str(tmp_path / "zones"))
    shifted = checks(("recency",))
    day = dt.date(2011, 11, 3)
    first = decide_and_record(shifted, POLICY, day, store)
    # The re-run sees its own earlier record but ignores it: same verdict, one history entry.
    rerun = decide_and_record(shifted, POLICY, day, store)
    assert rerun == first
    assert len(read_history(store, POLICY.history_path)["triggers"]) == 1
    # Later triggers do not exist "as of" an earlier day: a backfill is judged on its own past.
    decide_and_record(shifted, POLICY, dt.date(2011, 11, 20), store)
    backfill = decide(shifted, POLICY, dt.date(2011, 11, 1), read_history(store, POLICY.history_path))
    assert backfill["trigger"] is True and backfill["cooldown"]["last_trigger"] is None
    history = read_history(store, POLICY.history_path)
    assert [e["date"] for e in triggers_as_of(history, dt.date(2011, 11, 20))] == ["2011-11-03"]


def test_rerun_that_no_longer_triggers_removes_its_record(tmp_path) -> None:
    store = open_store(str(tmp_path / "zones"))
    day = dt.date(2011, 9, 1)
    decide_and_record(checks(("recency",)), POLICY, day, store)
    decide_and_record(checks(), POLICY, day, store)  # e.g. re-run after a fixed feature job
    assert read_history(store, POLICY.history_path)["triggers"] == []


def test_the_committed_policy_skips_features_that_grow_with_customer_age_and_names_real_ones() -> None:
    from propensity.core.settings import committed_settings
    from propensity.features.spec import MODEL_FEATURES

    excluded = committed_settings().drift.exclude_features
    # Left-censored age, and the BG/NBD outputs refitted on that age every snapshot (issue 19):
    # monitored, they "drift" every week and retrain for nothing.
    assert {"tenure_days", "days_since_first_order", "bgnbd_p_alive", "bgnbd_expected_30d"} <= set(excluded)
    # A renamed feature must not leave a stale name here (the new name would be monitored silently).
    assert [f for f in excluded if f not in MODEL_FEATURES] == []

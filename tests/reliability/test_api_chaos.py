"""Fault cases against real processes (``propensity serve``, a private redis-server, the product's own
Feast writes and deploy): bench/chaos_api.py's scenario, shortened. The bench prints the latencies;
this test holds the answers to what must never happen."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_load_through_a_redis_kill_an_empty_restart_an_old_rerun_and_a_deploy(tmp_path, monkeypatch):
    from chaos_api import run

    for key in [k for k in list(os.environ) if k.startswith("PROPENSITY_")]:
        if key not in ("PROPENSITY_HOME", "PROPENSITY_DRIFT_PYTHON"):
            monkeypatch.delenv(key)
    result = run(seconds=14, concurrency=4, work=tmp_path)
    assert result["wrong_version_answers"] == 0
    assert result["score_not_from_named_version"] == 0
    assert result["older_feature_answers"] == 0  # the old day's re-run changed nothing online
    assert result["404_while_store_empty"] == 0 and result["503_while_store_empty"] > 0
    assert result["by_cause"].get("store down", 0) > 0  # the kill was seen, as 503s naming the store
    assert set(result["versions"]) == {"1", "2"}  # the running API swapped to the deployed v2
    assert result["v2_first_answer_s_after_deploy"] is not None
    assert result["recovery_s_after_materialize"] is not None
    assert set(result["by_status"]) <= {200, 404, 503}  # nothing else, no 5xx but the documented 503

"""The OpenAPI schema says what the API enforces: schemathesis fuzzes the live API from its own schema
(a real uvicorn server on loopback, Feast on SQLite, a deployed model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from serving_models import make_feast_store, running_api, train_booster

from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

KEY = "fuzz-key"
CHECKS = (
    "not_a_server_error",  # no 5xx for anything a client can send (the store and model are up)
    "status_code_conformance",  # every status answered is documented
    "content_type_conformance",
    "response_schema_conformance",  # every body matches its documented schema
    "negative_data_rejection",  # what the schema forbids is refused with a 4xx
)


@pytest.fixture
def live_api(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models")})
    deploy_model(settings, train_booster(seed=0), 1, "champion")
    source = FeastFeatureSource(
        make_feast_store(tmp_path / "feast", {"17850": [3.0, 12.0, 540.5, 380.0, 0.05]}), "propensity_v1"
    )
    with running_api(create_app(settings, feature_source=source)) as url:
        yield url


# 413 is how the API refuses more ids than serving.max_batch (the schema's maxItems): a rejection too.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""


def test_schemathesis_finds_nothing_the_schema_does_not_say(live_api, tmp_path):
    cli = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    proc = subprocess.run(
        [str(cli), "--config-file", str(config), "run", f"{live_api}/openapi.json", "-H", f"X-API-Key: {KEY}", "-c", ",".join(CHECKS),
         "-n", "60", "--seed", "7", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "passed" in proc.stdout and "failed" not in proc.stdout.split("SUMMARY")[-1]

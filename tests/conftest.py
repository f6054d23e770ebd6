"""Hermetic test set-up shared by every test folder.

Airflow is pointed at the repo's DAGs with examples and default connections off; settings are
rebuilt per test from the committed defaults plus a temporary zone root, so no test writes into
the developer's data/ folder.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Helpers shared by every test folder (synthetic data, small models, the Airflow CLI): importable as
# top-level modules (``from serving_models import ...``), one copy each.
sys.path.insert(0, str(ROOT / "tests" / "support"))

os.environ.setdefault("AIRFLOW_HOME", str(ROOT))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("PROPENSITY_HOME", str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

# py4j logs from finalizers after pytest has closed its streams: keep it to warnings.
logging.getLogger("py4j").setLevel(logging.WARNING)

# The session's Triton Inference Server (``triton``) and its helpers.
pytest_plugins = ["triton_fixtures"]

REAL_DATA = (ROOT / ".." / "shared" / "data" / "online_retail" / "online_retail.csv.gz").resolve()


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory: the committed settings with a temporary zone root, plus overrides.

    ``make_settings(**{"source": {...}})`` deep-merges into the YAML defaults via the
    environment-free init path, so tests never depend on the caller's environment.
    """
    from propensity.core.settings import Settings, get_settings

    for key in list(os.environ):
        if key.startswith("PROPENSITY_") and key not in ("PROPENSITY_HOME", "PROPENSITY_DRIFT_PYTHON"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()

    def factory(**overrides) -> Settings:
        from propensity.core.settings import committed_settings

        return committed_settings(
            **{"zone_root": str(tmp_path / "zones"), "cache_dir": str(tmp_path / "cache"), **overrides}
        )

    yield factory
    get_settings.cache_clear()


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert REAL_DATA.is_file(), f"the demo data is expected at {REAL_DATA} on every machine"
    return REAL_DATA


@pytest.fixture(scope="session")
def spark() -> Iterator:
    """A local[1] Spark session shared by the session's tests."""
    from propensity.core.spark import spark_session

    session = spark_session(master="local[1]", app_name="propensity-tests", shuffle_partitions=1)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def synthetic_retailer():
    """The synthetic retailer generator (tests/fixtures/synthetic_retailer.py) as a module."""
    import importlib.util
    import sys

    name = "synthetic_retailer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "fixtures" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve the module's annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def synthetic_retailer_config() -> dict:
    """tests/fixtures/synthetic_retailer.yaml: the overrides that point the pipeline at that retailer."""
    import yaml

    return yaml.safe_load((ROOT / "tests" / "fixtures" / "synthetic_retailer.yaml").read_text())

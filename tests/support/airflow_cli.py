"""Run the `airflow` CLI against this repo's DAGs with a throw-away metadata DB and zone root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def cli_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for `airflow ...` subprocesses, with its metadata DB migrated.

    AIRFLOW_HOME stays the repo (its airflow.cfg, dags/, plugins/); the DB and logs live in
    ``tmp``; ``extra`` holds the PROPENSITY_* settings of the test (zone root, stores).
    The caller's own AIRFLOW__/PROPENSITY_ variables are dropped so no test leaks into another.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "PROPENSITY_"))}
    env |= {
        "AIRFLOW_HOME": str(ROOT),
        "PROPENSITY_HOME": str(ROOT),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp / "logs"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=180)
    return env

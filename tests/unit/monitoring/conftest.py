"""Run the detectors where they live: the drift venv (alibi-detect needs numpy<2).

Scenarios are built here (main venv), written as JSON, and checked by one subprocess in the
drift venv that calls :func:`propensity.monitoring.detectors.run_checks` on each; tests then assert on the
real detectors' output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
DRIFT_PYTHON = os.environ.get("PROPENSITY_DRIFT_PYTHON", str(ROOT / ".venv-drift" / "bin" / "python"))

_RUNNER = """
import json, sys
from propensity.monitoring.detectors import run_checks
scenarios = json.load(open(sys.argv[1]))
out = {name: run_checks(s["window"], s["params"]) for name, s in scenarios.items()}
json.dump(out, open(sys.argv[2], "w"))
"""


def run_in_drift_venv(scenarios: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """``run_checks`` on each ``{"window": ..., "params": ...}`` through the drift venv's python."""
    src, dst = tmp / "scenarios.json", tmp / "results.json"
    src.write_text(json.dumps(scenarios))
    proc = subprocess.run(
        [DRIFT_PYTHON, "-c", _RUNNER, str(src), str(dst)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "include")},
        timeout=300,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"drift venv run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(dst.read_text())


@pytest.fixture(scope="session")
def drift_venv():
    """The runner above, as a fixture (test folders are not packages)."""
    return run_in_drift_venv

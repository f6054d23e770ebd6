"""What :mod:`propensity.batch.spark_daemon` relies on in Spark, pinned with real ``local[1]`` jobs.

Spark must honour ``spark.python.daemon.module`` (the Python workers fork from our daemon, with
the batch worker's modules loaded and scikit-learn not), PySpark must still hand its daemon loop
over as ``pyspark.daemon.manager()``, and xgboost must import with scikit-learn hidden. Each
fallback (PySpark's own daemon, xgboost imported with scikit-learn) gives the same predictions.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from serving_models import train_booster

from propensity.batch import spark_daemon
from propensity.core.spark import PYTHON_DAEMON


def _task(payload: tuple[bytes, list[list[float]]]):
    """What a Python worker sees: which modules its daemon loaded, and the booster's predictions."""

    def run(_):
        import sys

        state = {
            "preloaded": "propensity.batch.worker" in sys.modules,
            "xgboost_loaded": "xgboost" in sys.modules,
            "sklearn": "sklearn" in sys.modules,
        }
        import numpy as np
        import xgboost as xgb

        raw, rows = payload
        booster = xgb.Booster(model_file=bytearray(raw))
        state["scores"] = booster.inplace_predict(np.asarray(rows, dtype=np.float32)).tolist()
        return [state]

    return run


def model_payload():
    booster = train_booster(seed=0)
    rows = np.random.default_rng(3).normal(size=(16, 5)).astype(np.float32)
    return booster, (bytes(booster.save_raw("ubj")), rows.tolist())


def test_the_daemon_setting_is_honoured_by_a_real_job(spark):
    booster, payload = model_payload()
    assert spark.sparkContext.getConf().get("spark.python.daemon.module") == PYTHON_DAEMON
    (state,) = spark.sparkContext.parallelize([0], 1).mapPartitions(_task(payload)).collect()
    assert state["preloaded"] and state["xgboost_loaded"], "the worker did not fork from our daemon"
    assert not state["sklearn"], "xgboost brought scikit-learn into the daemon"
    np.testing.assert_allclose(state["scores"], booster.inplace_predict(np.asarray(payload[1], np.float32)))


SCRIPT = """
import json, sys
import numpy as np
from propensity.core.spark import spark_session
sys.path[:0] = [{tests!r}, {support!r}]
from test_spark_contract import _task, model_payload

booster, payload = model_payload()
spark = spark_session(master="local[1]", app_name="contract-pyspark-daemon", python_daemon=None)
(state,) = spark.sparkContext.parallelize([0], 1).mapPartitions(_task(payload)).collect()
spark.stop()
state["driver"] = booster.inplace_predict(np.asarray(payload[1], np.float32)).tolist()
print("STATE " + json.dumps(state))
"""


def test_pyspark_s_own_daemon_gives_the_same_predictions(tmp_path):
    """The fallback, in a fresh JVM (the session under test keeps our daemon)."""
    script = tmp_path / "own_daemon.py"
    here = os.path.dirname(__file__)
    script.write_text(SCRIPT.format(tests=here, support=os.path.join(here, "..", "..", "support")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("STATE ")), None)
    assert done.returncode == 0 and line, done.stderr[-3000:]
    state = json.loads(line[len("STATE ") :])
    assert not state["preloaded"] and not state["xgboost_loaded"]  # PySpark's daemon imports nothing
    np.testing.assert_allclose(state["scores"], state["driver"])


def test_pyspark_hands_its_daemon_over_as_manager():
    from pyspark import daemon

    assert callable(daemon.manager) and not inspect.signature(daemon.manager).parameters


def run_daemon(code: str) -> subprocess.CompletedProcess:
    """A daemon as Spark starts one; stdin closed at once, as the JVM closes it to stop the daemon."""
    return subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, timeout=120
    )


def test_without_manager_the_daemon_runs_pyspark_s_as_spark_would():
    """PySpark's daemon writes its port on stdout, then stops when stdin closes."""
    reference = run_daemon("from pyspark.daemon import manager\nmanager()\n")
    done = run_daemon(
        textwrap.dedent(
            """
            import pyspark.daemon
            del pyspark.daemon.manager  # a release that renamed it
            from propensity.batch.spark_daemon import main
            main()
            """
        )
    )
    assert len(done.stdout) == len(reference.stdout) == 4  # the port, a 4-byte int
    assert 0 < int.from_bytes(done.stdout, "big") < 65536
    assert done.returncode == reference.returncode, done.stderr[-2000:]
    assert done.stderr.decode().strip().splitlines() == [
        "propensity.batch.spark_daemon: pyspark.daemon has no manager(): running PySpark's daemon "
        "as Spark does (python -m pyspark.daemon)"
    ]


def test_xgboost_imports_without_sklearn_and_predicts_the_same():
    code = textwrap.dedent(
        """
        import sys
        from propensity.batch.spark_daemon import import_xgboost_without_sklearn
        import_xgboost_without_sklearn()
        assert "sklearn" not in sys.modules and "xgboost" in sys.modules
        import sklearn  # unhidden afterwards: a worker that needs it still gets it
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_an_xgboost_that_needs_sklearn_is_imported_with_it(tmp_path):
    (tmp_path / "xgboost.py").write_text("import sklearn\nWITH = sklearn.__name__\n")
    code = textwrap.dedent(
        """
        import sys
        from propensity.batch.spark_daemon import import_xgboost_without_sklearn
        import_xgboost_without_sklearn()
        print(sys.modules["xgboost"].WITH)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "sklearn", done.stderr[-2000:]
    assert done.stderr.count("xgboost needs scikit-learn at import") == 1


@pytest.mark.parametrize("module", spark_daemon.PRELOAD)
def test_every_preloaded_module_imports(module):
    import importlib

    importlib.import_module(module)

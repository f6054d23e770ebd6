"""Spark's Python worker daemon, with the project's executor imports done once, before it forks.

Spark starts ``python -m <spark.python.daemon.module>`` once per executor and forks a worker from
it for each Python task slot. PySpark's own daemon imports nothing, so each new worker paid its
imports inside its first task: ~1.5 s for the batch scorer, most of it scikit-learn and SciPy,
which xgboost imports only for its scikit-learn wrappers (the workers use the Booster alone).

This daemon imports the batch worker's modules first, with xgboost loaded while scikit-learn is
hidden (so xgboost skips those wrappers; only in the daemon and its workers: the driver's xgboost
is untouched, and a worker that imports scikit-learn itself still can), then hands over to
PySpark's daemon. Nothing is started before the fork: only modules are loaded (pandas brings
jemalloc's background thread, which jemalloc re-creates in each child, as for any forking server).
A failed preload is reported on stderr and the workers import on demand, as with PySpark's daemon.

This module is the project's one adapter to Spark's worker internals: the daemon module is
chosen with ``spark.python.daemon.module`` (set by :func:`propensity.core.spark.spark_session`;
an advanced setting Spark added for custom daemons, SPARK-22959), this module hands over to
``pyspark.daemon.manager()``, and scikit-learn is hidden from xgboost with a ``None`` entry in
``sys.modules``. Each has a fallback taken with one line on stderr (the daemon's start is checked
once): no ``manager`` -> PySpark's daemon run as Spark runs it (``python -m pyspark.daemon``);
xgboost failing without scikit-learn -> xgboost imported with it.
``tests/unit/batch/test_spark_contract.py`` pins all three with a real ``local[1]`` job.
"""

from __future__ import annotations

import sys

PRELOAD = ("numpy", "pyarrow", "pyarrow.parquet", "pandas", "psycopg", "propensity.batch.worker")


def import_xgboost_without_sklearn() -> None:
    """Import xgboost with scikit-learn hidden (a ``None`` module makes its import fail), then unhide it.

    Should an xgboost release need scikit-learn at import, it is imported with it (reported).
    """
    hide = "sklearn" not in sys.modules
    if hide:  # bench_adapters: the daemon's start (first task) 1.97 s hidden vs 2.77 s with scikit-learn
        sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import xgboost  # noqa: F401
    except ImportError as exc:
        if not hide:
            raise
        for name in [m for m in sys.modules if m == "xgboost" or m.startswith("xgboost.")]:
            del sys.modules[name]  # half-imported without scikit-learn: import it afresh
        del sys.modules["sklearn"]
        hide = False
        _report(f"xgboost needs scikit-learn at import ({exc!r}): imported with it")
        import xgboost  # noqa: F401, F811
    finally:
        if hide:
            del sys.modules["sklearn"]


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (xgboost first, without scikit-learn); returns what failed, as messages."""
    import importlib

    failed = []
    try:
        import_xgboost_without_sklearn()
    except Exception as exc:  # noqa: BLE001 - reported; the workers import on demand
        failed.append(f"xgboost: {exc!r}")
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"{name}: {exc!r}")
    return failed


def _report(problem: str) -> None:
    # stdout is PySpark's channel to the JVM (the daemon writes its port there): report on stderr.
    print(f"propensity.batch.spark_daemon: {problem}", file=sys.stderr, flush=True)


def main() -> None:
    for problem in preload():
        _report(f"preload failed, workers import on demand: {problem}")
    from pyspark import daemon

    manager = getattr(daemon, "manager", None)
    if callable(manager):
        manager()
        return
    import runpy

    _report(
        "pyspark.daemon has no manager(): running PySpark's daemon as Spark does (python -m pyspark.daemon)"
    )
    sys.modules.pop("pyspark.daemon", None)  # run afresh as __main__, as ``python -m`` would
    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

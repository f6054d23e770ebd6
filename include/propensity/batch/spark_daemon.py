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
"""

from __future__ import annotations

import sys

PRELOAD = ("numpy", "pyarrow", "pyarrow.parquet", "pandas", "psycopg", "propensity.batch.worker")


def import_xgboost_without_sklearn() -> None:
    """Import xgboost with scikit-learn hidden (a ``None`` module makes its import fail), then unhide it."""
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import xgboost  # noqa: F401
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


def main() -> None:
    # stdout is PySpark's channel to the JVM (the daemon writes its port there): report on stderr.
    for problem in preload():
        print(
            f"propensity.batch.spark_daemon: preload failed, workers import on demand: {problem}",
            file=sys.stderr,
        )
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()

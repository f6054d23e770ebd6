"""One way to get a SparkSession, local or on a cluster, from settings."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

if TYPE_CHECKING:
    from propensity.core.settings import Settings

# Client compiler only: a fresh driver's JVM start and first job are dominated by the JIT
# warming up, and on a 2-core host the server compiler's threads compete with the tasks.
# Measured (bench_features.py, 5.4M rows, local[2]): JVM start 4.8 s vs 6.2 s, first job
# 18.2 s vs 22.0 s at load 2 (9 s vs 16-23 s and 43-50 s vs 67-72 s at load 6-10). The price
# is steady-state speed: a warm job 11.2 s vs 9.2 s (16 s vs 7 s of executor CPU). Pass
# ``java_options=""`` (the JVM's tiered default) for long-lived sessions.
QUICK_JIT = "-XX:TieredStopAtLevel=1"
# Python workers fork from a daemon that has the batch scorer's modules loaded (see the module):
# the daemon imports them once, without scikit-learn, instead of each new worker inside its first task.
# bench_adapters: a new worker's task 0.38 s vs 1.92 s (PySpark's daemon), a session's first 1.97 vs 3.41 s
PYTHON_DAEMON = "propensity.batch.spark_daemon"


def spark_session(
    master: str = "local[*]",
    app_name: str = "propensity",
    shuffle_partitions: int = 4,
    driver_memory: str = "2g",
    java_options: str = QUICK_JIT,
    bind_address: str | None = "127.0.0.1",
    python_daemon: str | None = PYTHON_DAEMON,
) -> SparkSession:
    """A session on ``master``. Python workers run the current interpreter (the venv's),
    unless PYSPARK_PYTHON says otherwise; the session timezone is UTC so dates never shift.

    ``java_options`` (the driver JVM's) only apply when this call starts the JVM.
    ``python_daemon=None``: PySpark's own worker daemon (benches and tests compare them)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if bind_address:
        # The driver's RPC, block manager and UI listen on this address only (loopback by default:
        # a laptop's Spark is nobody else's business). On a cluster, set spark.bind_address to an
        # address the executors reach. The UI reads SPARK_LOCAL_IP when the JVM starts.
        os.environ.setdefault("SPARK_LOCAL_IP", bind_address)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.showConsoleProgress", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if bind_address:
        builder = builder.config("spark.driver.bindAddress", bind_address).config(
            "spark.driver.host", bind_address
        )
    if python_daemon:
        builder = builder.config("spark.python.daemon.module", python_daemon)
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    return builder.getOrCreate()


def configured_session(settings: Settings, app_name: str) -> SparkSession:
    """The session a pipeline task runs on: master, partitions, memory and bind address from ``spark:``."""
    s = settings.spark
    return spark_session(
        s.master, app_name, s.shuffle_partitions, s.driver_memory, bind_address=s.bind_address
    )

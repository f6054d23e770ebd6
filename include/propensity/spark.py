"""One way to get a SparkSession, local or on a cluster, from settings."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def spark_session(
    master: str = "local[*]",
    app_name: str = "propensity",
    shuffle_partitions: int = 4,
    driver_memory: str = "2g",
) -> SparkSession:
    """A session on ``master``. Python workers run the current interpreter (the venv's),
    unless PYSPARK_PYTHON says otherwise; the session timezone is UTC so dates never shift."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        # Short jobs (one snapshot, one day's scores) are dominated by the JIT warming up: the
        # client compiler alone halves a fresh driver's first job.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
        .config("spark.ui.showConsoleProgress", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )

"""Errors by what a retry can do about them.

:class:`DataError`: the input is wrong or absent (a bad source file, a schema or mapping error, a
validation verdict, no data for the date). The same input fails the same way, so Airflow tasks
fail at once without retrying (:func:`propensity.core.dags.fail_fast`); the message names what
and where. Anything else (a connection to Postgres, Redis, S3 or MLflow that drops) may be
transient and is retried with backoff.
"""

from __future__ import annotations


class DataError(Exception):
    """Input that a retry cannot fix: fix the data or the configuration, then re-run.

    ``retryable`` marks the one kind that may resolve itself: input another DAG has not written
    *yet* (today's partition while today's ingest still runs).
    """

    retryable = False

"""What every DAG shares: a start date that never gates a business date, retries for what a retry
can fix, and an immediate failure for what it cannot.

* :data:`START_DATE` is an early constant (1970-01-01 UTC) and every DAG has ``catchup=False``:
  the business dates come from the data and the logical date, so ``airflow dags test training D``
  for any D (1999 included) runs that date. A start date taken from one dataset would make a run
  of an earlier date "succeed" with no task run.
* :func:`default_args`: retries with exponential backoff, for transient failures (a database,
  Redis, S3 or MLflow connection that drops).
* :func:`fail_fast`: a task that raises :class:`propensity.core.errors.DataError` (a bad source
  file, a schema or mapping error, a validation verdict, no input for the date) or whose settings
  do not validate fails at once with :class:`AirflowFailException`: the same input gives the same
  error, so retrying only delays the alert. The one place this mapping is made. The same wrapper
  makes each return value strict JSON (:func:`xcom_safe`): Airflow's API server refuses NaN.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable
from typing import Any

import pendulum

from propensity.core.errors import DataError

START_DATE = pendulum.datetime(1970, 1, 1, tz="UTC")


def default_args(
    retries: int = 2, retry_delay: dt.timedelta = dt.timedelta(seconds=30), **extra: Any
) -> dict[str, Any]:
    """Retries for transient errors, each delay doubling (Airflow's exponential backoff), capped."""
    return {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=10),
        **extra,
    }


def _deterministic() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    return (DataError, ValidationError)


def xcom_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf; numpy's too) as None, in dicts, lists and
    tuples at any depth. A task's return value goes to Airflow's API server as strict JSON, which
    has no NaN: a baseline that could not be scored (NaN) failed ``train_model`` there with "Out of
    range float values are not JSON compliant" although ``airflow dags test`` stored it fine.
    """
    if isinstance(value, dict):
        return {k: xcom_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [xcom_safe(v) for v in value]
        if hasattr(value, "_fields"):  # a namedtuple takes its fields one by one
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if getattr(value, "ndim", None) == 0 and getattr(value.dtype, "kind", "") == "f":  # numpy's float32
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def _failing_fast(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return xcom_safe(fn(*args, **kwargs))
        except AirflowFailException:
            raise
        except _deterministic() as exc:
            if getattr(exc, "retryable", False):
                raise  # input not written yet (an upstream run in flight): the retries wait for it
            raise AirflowFailException(
                f"{type(exc).__name__}: {exc} (not retried: the same input fails the same way)"
            ) from exc

    run.__propensity_fail_fast__ = True  # type: ignore[attr-defined]
    return run


def fail_fast(dag: Any) -> Any:
    """Wrap the callable of each of ``dag``'s Python tasks run in this process (returns ``dag``).

    Tasks run in another interpreter (``@task.external_python``) are left alone: their source is
    shipped, not the wrapper.
    """
    from airflow.providers.standard.operators.python import _BasePythonVirtualenvOperator

    for task in dag.tasks:
        callable_ = getattr(task, "python_callable", None)
        if callable_ is None or isinstance(task, _BasePythonVirtualenvOperator):
            continue
        if not getattr(callable_, "__propensity_fail_fast__", False):
            task.python_callable = _failing_fast(callable_)
    return dag

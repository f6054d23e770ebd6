"""Great Expectations behind one module: what the project uses of GE beyond its public API.

Each use is checked once, at first use, against the shape it relies on; when the check fails the
code logs one line and takes GE's public path instead, which gives the same results.
``tests/unit/ingest/test_ge_contract.py`` pins every shape (and fails loudly when a GE or PySpark
upgrade changes one); ``bench/bench_adapters.py`` measures the private path against the public one.

* :func:`validate_suite`: GE's V1 ``Validator`` (``great_expectations.validator.v1_validator``,
  what ``ValidationDefinition.run`` and ``Batch.validate`` run inside) on a batch definition,
  storing nothing. Public path: ``batch_definition.get_batch(...).validate(suite, ...)``.
* :func:`quiet_great_expectations`: GE's log levels, and ``pyspark.sql.connect`` marked absent
  where importing it would end the process (see the function).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Any, Literal

log = logging.getLogger(__name__)


def quiet_great_expectations() -> None:
    """Call before importing great_expectations.

    Under Airflow's logging its import and every store and metric log at INFO (hundreds of
    lines per task); one module pins its own level. And GE probes ``pyspark.sql.connect``, whose
    import calls ``sys.exit(0)`` when ``__main__`` has no file (``python -c``, embedded
    interpreters) and Spark Connect's optional packages are absent: the process would vanish
    with status 0. Marking the module absent there (a ``None`` entry in ``sys.modules`` makes
    its import raise ImportError, which GE handles) is the one way around it short of installing
    Spark Connect's packages; the contract test fails once PySpark stops exiting.
    """
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None and not hasattr(main, "__file__"):
        sys.modules.setdefault("pyspark.sql.connect", None)  # type: ignore[arg-type]


def validate_suite(
    batch_definition: Any,
    frame: Any,
    suite: Any,
    result_format: dict[str, Any],
    *,
    via: Literal["validator", "batch"] | None = None,
) -> Any:
    """GE's suite validation result for ``frame`` on ``batch_definition``, storing nothing.

    ``via``: the path to take whatever the check says (tests and benches compare them).
    """
    # bench_adapters: 3.67 s vs 4.26 s through Batch.validate on a 1M-line day (339 vs 337 ms on a real one)
    validator = _v1_validator() if via is None else None if via == "batch" else _v1_validator(required=True)
    if validator is None:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(suite, result_format=result_format)
    return validator(
        batch_definition, result_format=result_format, batch_parameters={"dataframe": frame}
    ).validate_expectation_suite(suite)


@functools.cache
def _v1_validator(required: bool = False) -> Any:
    """GE's V1 Validator class if it has the shape used here, else None (logged once; raised if required)."""
    try:
        from great_expectations.validator.v1_validator import Validator

        have = inspect.signature(Validator.__init__).parameters
        missing = [p for p in VALIDATOR_PARAMETERS if p not in have]
        if missing or not callable(getattr(Validator, "validate_expectation_suite", None)):
            raise TypeError(f"Validator({', '.join(have)}) lacks {missing or 'validate_expectation_suite'}")
    except (ImportError, TypeError, ValueError) as why:
        if required:
            raise
        log.warning("Great Expectations: validating through Batch.validate (%s: %s)", type(why).__name__, why)
        return None
    return Validator


VALIDATOR_PARAMETERS = ("batch_definition", "result_format", "batch_parameters")

"""What :mod:`propensity.ingest.ge_compat` and the GE runner rely on in Great Expectations and PySpark.

A GE or PySpark upgrade that changes one of these shapes fails here, by name; and GE's public
path, which the adapter takes when the V1 Validator is missing or changed, gives the same results.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from validate_helpers import interval, sale, write_raw

from propensity.core.storage import read_partition
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest import ge_compat
from propensity.ingest.expectations import build_checks
from propensity.ingest.ge_runner import RESULT_FORMAT, _cached_batch_definition, run_suite
from propensity.ingest.validate import events_frame, learn_bands

DAY = "2011-03-01"


@pytest.fixture
def day(vsettings):
    """A day with rows failing row checks (a negative price, a zero quantity) and its suite."""
    rows = [sale(DAY, i) for i in range(60)]
    rows[3]["unit_price"] = -1.0
    rows[7].update(quantity=0, amount=0.0)
    rows[11]["customer_id"] = None
    write_raw(vsettings, DAY, rows)
    frame = events_frame(
        read_partition(zone_store(vsettings), *RAW_EVENTS, dt.date.fromisoformat(DAY)), vsettings
    )
    start, _ = interval(DAY)
    checks = build_checks(vsettings, learn_bands(vsettings, start.date(), [], rows=len(frame)))
    return frame, checks


def test_the_v1_validator_has_the_shape_relied_on():
    from great_expectations.validator.v1_validator import Validator

    params = inspect.signature(Validator.__init__).parameters
    assert list(params)[1:4] == list(ge_compat.VALIDATOR_PARAMETERS)
    assert list(inspect.signature(Validator.validate_expectation_suite).parameters)[:2] == [
        "self",
        "expectation_suite",
    ]
    assert ge_compat._v1_validator() is Validator


def test_the_result_fields_read_are_there(day):
    import great_expectations as gx

    frame, checks = day
    _, batch = _cached_batch_definition("pandas")
    suite = gx.ExpectationSuite(name="contract", expectations=[c.expectation for c in checks])
    with pd.option_context("mode.string_storage", "pyarrow"):
        validation = ge_compat.validate_suite(batch, frame, suite, dict(RESULT_FORMAT), via="validator")
    assert len(validation.results) == len(checks)
    by_check = {r.expectation_config.meta["check"]: r for r in validation.results}
    assert set(by_check) == {c.name for c in checks}
    price = by_check["unit_price_not_negative"]
    assert price.success is False and isinstance(price.expectation_config.kwargs, dict)
    assert price.result["unexpected_count"] == 1
    # Row ids, values excluded: one dict holding the list of ids.
    assert price.result["unexpected_index_list"] == [{"_row": [3]}]
    assert "observed_value" in by_check["row_count_in_band"].result
    assert set(price.exception_info) >= {"raised_exception", "exception_message"}


def results(frame, checks) -> dict:
    out = {}
    for name, r in run_suite(frame, checks).items():
        out[name] = (r.success, r.observed, r.expected, r.unexpected_count, np.sort(r.rows).tolist(), r.error)
    return out


def test_the_public_path_gives_the_same_results(day, monkeypatch):
    frame, checks = day
    private = results(frame, checks)
    monkeypatch.setattr(ge_compat, "_v1_validator", lambda required=False: None)  # as if GE dropped it
    public = results(frame, checks)
    assert public == private
    assert private["unit_price_not_negative"][3:5] == (1, [3])
    assert private["quantity_nonzero"][3:5] == (1, [7])


def test_a_changed_validator_is_noticed_once_and_logged(monkeypatch, caplog):
    from great_expectations.validator import v1_validator

    class Renamed:  # a release whose Validator takes other arguments
        def __init__(self, definition, fmt=None) -> None: ...

    ge_compat._v1_validator.cache_clear()
    monkeypatch.setattr(v1_validator, "Validator", Renamed)
    try:
        with caplog.at_level(logging.WARNING, logger=ge_compat.__name__):
            assert ge_compat._v1_validator() is None
            assert ge_compat._v1_validator() is None  # checked once
        assert len(caplog.records) == 1 and "Batch.validate" in caplog.records[0].getMessage()
        with pytest.raises(TypeError):
            ge_compat._v1_validator(required=True)
    finally:
        ge_compat._v1_validator.cache_clear()


def test_pyspark_connect_still_ends_a_fileless_main_so_the_guard_is_needed():
    """Remove the guard in quiet_great_expectations once this fails."""
    done = subprocess.run(
        [sys.executable, "-c", "import pyspark.sql.connect\nprint('alive')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "alive" not in done.stdout, (
        "pyspark.sql.connect no longer exits: drop the guard"
    )


def test_with_the_guard_great_expectations_imports_under_python_c():
    code = (
        "from propensity.ingest.ge_compat import quiet_great_expectations\n"
        "quiet_great_expectations()\n"
        "import great_expectations\n"
        "from great_expectations.compatibility import pyspark\n"
        "print('alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr[-2000:]

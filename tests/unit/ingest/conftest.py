"""Fixtures for validation unit tests (helpers live in validate_helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def vsettings(make_settings):
    """Settings for fast unit runs: no Data Docs, two days of history make a band."""
    return make_settings(validation={"data_docs": False, "min_history": 2})

"""Bootstrap: a year of history in one wide run, for a new deployment or the demo.

Daily runs are the steady state; replaying 365 days one DagRun at a time would spend most of
its time starting tasks. Bootstrap runs the same stage functions over a range: collection and
validation day by day in one task, then every feature snapshot any training run or drift check
will read, in one Spark pass. The results are the partitions the daily runs would have written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from propensity.core.settings import Settings


def snapshot_dates(
    settings: Settings, first_day: dt.date, last_as_of: dt.date, daily_from: dt.date | None
) -> list[dt.date]:
    """The training cutoff grid (weekly) plus every day from ``daily_from`` (drift, serving)."""
    from propensity.core.cutoffs import cutoff_grid

    dates = set(cutoff_grid(first_day, last_as_of, settings.training))
    if daily_from is not None:
        dates.update(daily_from + dt.timedelta(days=i) for i in range((last_as_of - daily_from).days + 1))
    return sorted(d for d in dates if d <= last_as_of)


def ingest_history(
    settings: Settings, first_day: dt.date, last_day: dt.date, *, data_docs: bool = False
) -> dict[str, Any]:
    """Collect and validate every day of ``[first_day, last_day]``; a bad day stops only itself.

    Data Docs pages cost more than the checks themselves; a year of them is off by default
    here (each day's summary JSON and quarantine are written as always). Daily runs render them.
    """
    from propensity.ingest.validate import collect_and_validate

    settings = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"data_docs": data_docs})}
    )
    return collect_and_validate(settings, first_day, last_day)


def history_features(
    settings: Settings, first_day: dt.date, last_day: dt.date, daily_from: dt.date | None
) -> dict[str, Any]:
    """Every snapshot up to the one as of ``last_day + 1`` in one Spark pass; the last one online."""
    from propensity.features.job import compute_features
    from propensity.features.store import materialize_dates

    last_as_of = last_day + dt.timedelta(days=1)
    dates = snapshot_dates(settings, first_day, last_as_of, daily_from)
    uris = compute_features(settings, dates)
    materialize_dates(settings, [dates[-1]])
    return {"snapshots": len(uris), "first": dates[0].isoformat(), "last": dates[-1].isoformat()}

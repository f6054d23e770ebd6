"""
### bootstrap: a year of history in one wide run

Manual only. For a new deployment (or `make demo`): collects and validates every day of
`[first_day, last_day]` in one task (the same functions, and the same partitions, as the daily
`ingest` runs), then computes in one Spark pass every feature snapshot a training run or a
drift check will read (the weekly training-cutoff grid, plus every day from
`daily_snapshots_from`), and loads the latest snapshot into the online store.

`first_day` / `last_day` empty (the default): the source's first and last day with events
(`propensity source check PATH` shows them). After it, the daily DAGs take over from `last_day + 1`.

**On-call**: safe to re-run: every partition is replaced atomically with the same content. A
day that fails validation is listed in `ingest_history`'s result and stays unpublished; the
others go on. Fix the day, then run `ingest` for it by hand.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from propensity.core.dags import START_DATE, default_args, fail_fast


def _range() -> tuple[dt.date, dt.date, dt.date | None]:
    """The Params' days; an empty first or last day is the source's own (its first/last event)."""
    from propensity.core.settings import get_settings
    from propensity.ingest.collect import source_span

    params = get_current_context()["params"]
    first, last, daily = (params.get(k) for k in ("first_day", "last_day", "daily_snapshots_from"))
    span = source_span(get_settings()) if not (first and last) else None
    first_day = dt.date.fromisoformat(first) if first else span[0]
    last_day = dt.date.fromisoformat(last) if last else span[1]
    if last_day < first_day:
        from propensity.core.errors import DataError

        raise DataError(f"bootstrap: last_day {last_day} is before first_day {first_day}")
    return first_day, last_day, dt.date.fromisoformat(daily) if daily else None


@dag(
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "first_day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="First day to collect; empty: the source's first day with events",
        ),
        "last_day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day to collect (inclusive); empty: the source's last day with events",
        ),
        "daily_snapshots_from": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Also a snapshot for every day from here (drift windows); empty: none",
        ),
        "data_docs": Param(
            False, type="boolean", description="Render Data Docs for every day (slow over a year)"
        ),
    },
    tags=["propensity", "bootstrap"],
    doc_md=__doc__,
)
def bootstrap() -> None:
    @task
    def ingest_history() -> dict:
        from propensity.core.settings import get_settings
        from propensity.features.bootstrap import ingest_history as run

        first, last, _ = _range()
        return run(get_settings(), first, last, data_docs=get_current_context()["params"]["data_docs"])

    @task
    def history_features() -> dict:
        from propensity.core.settings import get_settings
        from propensity.features.bootstrap import history_features as run

        return run(get_settings(), *_range())

    ingest_history() >> history_features()


fail_fast(bootstrap())

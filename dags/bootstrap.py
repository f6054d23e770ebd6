"""
### bootstrap: a year of history in one wide run

Manual only. For a new deployment (or `make demo`): collects and validates every day of
`[first_day, last_day]` in one task (the same functions, and the same partitions, as the daily
`ingest` runs), then computes in one Spark pass every feature snapshot a training run or a
drift check will read (the weekly training-cutoff grid, plus every day from
`daily_snapshots_from`), and loads the latest snapshot into the online store.

After it, the daily DAGs take over from `last_day + 1`.

**On-call**: safe to re-run: every partition is replaced atomically with the same content. A
day that fails validation is listed in `ingest_history`'s result and stays unpublished; the
others go on. Fix the day, then run `ingest` for it by hand.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task


def _range() -> tuple[dt.date, dt.date, dt.date | None]:
    params = get_current_context()["params"]
    daily = params.get("daily_snapshots_from")
    return (
        dt.date.fromisoformat(params["first_day"]),
        dt.date.fromisoformat(params["last_day"]),
        dt.date.fromisoformat(daily) if daily else None,
    )


@dag(
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        "first_day": Param("2010-12-01", type="string", format="date", description="First day to collect"),
        "last_day": Param(
            "2011-11-30", type="string", format="date", description="Last day to collect (inclusive)"
        ),
        "daily_snapshots_from": Param(
            "2011-11-01",
            type=["null", "string"],
            format="date",
            description="Also a snapshot for every day from here",
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


bootstrap()

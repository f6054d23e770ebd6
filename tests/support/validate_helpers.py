"""Helpers for validation unit tests: raw partitions written directly in canonical form."""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd

from propensity.core.storage import write_partition
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest import sources

UTC = dt.UTC


def interval(day: str | dt.date) -> tuple[dt.datetime, dt.datetime]:
    d = dt.date.fromisoformat(day) if isinstance(day, str) else day
    start = dt.datetime.combine(d, dt.time(0), tzinfo=UTC)
    return start, start + dt.timedelta(days=1)


def sale(day: str, i: int, **over) -> dict:
    """One ordinary product sale line on ``day`` (canonical names), varied by ``i``."""
    rng = random.Random(f"{day}-{i}")
    qty = rng.randint(1, 12)
    price = round(rng.uniform(0.5, 9.5), 2)
    row = {
        "customer_id": f"c{rng.randint(1, 25)}" if i % 4 else None,  # every 4th line a guest
        "event_time": pd.Timestamp(f"{day} 08:00", tz="UTC") + pd.Timedelta(seconds=(97 * i) % (14 * 3600)),
        "order_id": f"{day.replace('-', '')}{i // 3:03d}",
        "item_id": f"ITEM{rng.randint(1, 40):03d}",
        "quantity": qty,
        "unit_price": price,
        "amount": round(qty * price, 2),
        "is_return": False,
        "country": rng.choice(["United Kingdom", "United Kingdom", "France", "Germany"]),
        "_parse_errors": None,
    }
    row.update(over)
    return row


def write_raw(settings, day: str, rows: list[dict]) -> None:
    """Write ``rows`` as the raw partition of ``day``, exactly as collect would."""
    frame = pd.DataFrame(rows) if rows else sources.empty_frame()
    if rows:
        frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype("datetime64[us, UTC]")
        frame["_source_file"] = "test.csv"
        frame["_source_row"] = range(1, len(frame) + 1)
        for col in ("customer_id", "order_id", "item_id", "country", "_parse_errors"):
            frame[col] = frame[col].astype("string")
        frame["quantity"] = frame["quantity"].astype("Int64")
        frame["is_return"] = frame["is_return"].astype("boolean")
        frame = frame[sources.RAW_SCHEMA.names]
    write_partition(zone_store(settings), *RAW_EVENTS, dt.date.fromisoformat(day), sources.to_table(frame))

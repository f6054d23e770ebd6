"""Hand-made validated events for the feature tests (the validated schema: raw + line_kind)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from propensity.core.schema import RAW_SCHEMA

VALIDATED_SCHEMA = pa.schema([*RAW_SCHEMA, pa.field("line_kind", pa.string())])


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def line(
    customer: str | None,
    when: str,
    order: str,
    item: str,
    quantity: int,
    price: float,
    *,
    country: str | None = None,
    kind: str = "product",
) -> dict:
    return {
        "customer_id": customer,
        "event_time": ts(when),
        "order_id": order,
        "item_id": item,
        "quantity": quantity,
        "unit_price": price,
        "amount": quantity * price,
        "is_return": quantity < 0,
        "country": country,
        "_source_file": "hand-made",
        "_source_row": 0,
        "_parse_errors": None,
        "line_kind": kind,
    }


def table(rows: list[dict]) -> pa.Table:
    rows = [dict(r, _source_row=i + 1) for i, r in enumerate(rows)]
    return pa.Table.from_pylist(rows, schema=VALIDATED_SCHEMA)


UK, FR = "United Kingdom", "France"

# The story the expected values in the tests are computed from, as of 2011-04-01.
EVENTS = [
    # A (UK): three orders and one return before the snapshot, one order at its very midnight.
    line("A", "2011-01-01 10:00:00", "O1", "X", 2, 5.0, country=UK),
    line("A", "2011-01-01 10:00:00", "O1", "Y", 1, 2.5, country=UK),
    line("A", "2011-03-01 12:00:00", "O2", "X", 1, 10.0, country=UK),
    line("A", "2011-03-05 09:00:00", "R1", "X", -1, 10.0, country=UK),
    line("A", "2011-03-20 08:00:00", "O3", "Z", 3, 1.0, country=UK),
    line("A", "2011-03-20 08:00:00", "O3", "X", 1, 10.0, country=UK),
    line("A", "2011-03-25 08:00:00", "P1", "POST", 1, 999.0, country=UK, kind="non_product"),
    line("A", "2011-04-01 00:00:00", "O4", "W", 1, 7.0, country=UK),
    # B (no country): one order 355.6 days before: still active.
    line("B", "2010-04-10 10:00:00", "O5", "Q", 1, 100.0),
    # C (France): last order 396 days before: inside the history, not active.
    line("C", "2010-03-01 10:00:00", "O6", "Q", 1, 50.0, country=FR),
    # A guest line: no customer, never a feature.
    line(None, "2011-03-10 10:00:00", "O7", "X", 5, 10.0, country=UK),
]

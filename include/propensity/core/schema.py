"""The canonical event schema every source is mapped to (DESIGN.md), plus lineage columns."""

from __future__ import annotations

import pyarrow as pa

EVENT_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
        pa.field("order_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("quantity", pa.int64()),
        pa.field("unit_price", pa.float64()),
        pa.field("amount", pa.float64()),
        pa.field("is_return", pa.bool_()),
        pa.field("country", pa.string()),
    ]
)

# Lineage: where each row came from, and what could not be parsed. Rows are never
# dropped by collection: a value that does not parse becomes null and is named here,
# so validation can quarantine the row with its reason.
LINEAGE_SCHEMA = pa.schema(
    [
        pa.field("_source_file", pa.string()),
        pa.field("_source_row", pa.int64()),  # 1-based data line in that file (header excluded)
        pa.field("_parse_errors", pa.string()),
    ]
)

RAW_SCHEMA = pa.schema(list(EVENT_SCHEMA) + list(LINEAGE_SCHEMA))
EVENT_COLUMNS = EVENT_SCHEMA.names
RAW_COLUMNS = RAW_SCHEMA.names

# validated/events: the raw columns plus what validation decided about the line. Guest rows
# (null customer_id) stay here; the feature stage filters them.
LINE_KINDS = ("product", "non_product")  # non_product: fee/adjustment lines (source.non_product_items)
VALIDATED_SCHEMA = pa.schema(list(RAW_SCHEMA) + [pa.field("line_kind", pa.string())])

# quarantine/events: the raw columns plus the name of every check the line failed.
QUARANTINE_SCHEMA = pa.schema(list(RAW_SCHEMA) + [pa.field("quarantine_reasons", pa.list_(pa.string()))])

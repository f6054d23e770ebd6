"""Source adapters: read a retailer's files and map them to the canonical event schema.

Only :class:`~propensity.core.settings.ColumnMapping` knows a source's column names; the code
below works on canonical names alone, so another retailer's export runs by changing the
mapping in configuration.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.core.errors import DataError
from propensity.core.ids import canonical_customer_ids
from propensity.core.schema import RAW_SCHEMA
from propensity.core.settings import SourceSettings

log = logging.getLogger(__name__)

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class SourceError(DataError, RuntimeError):
    """A source file that cannot be read as configured. The message names the file and the problem."""


def detect_format(name: str, configured: str) -> str:
    if configured != "auto":
        return configured
    lower = name.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        return "csv"
    raise SourceError(f"{name}: cannot tell the format from the name; set source.format to csv or parquet")


def read_source_bytes(data: bytes, name: str, source: SourceSettings) -> pd.DataFrame:
    """Parse one file's bytes into a DataFrame of the source's own columns (no mapping yet).

    CSV columns stay strings so that every value can be parsed, and its failure reported,
    by :func:`to_canonical`; Parquet keeps its types.
    """
    if len(data) == 0:
        raise SourceError(f"{name}: file is empty (0 bytes)")
    fmt = detect_format(name, source.format)
    if fmt == "parquet":
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: not a readable Parquet file ({exc})") from exc
    if name.lower().endswith(".gz") or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise SourceError(f"{name}: gzip stream is damaged or truncated ({exc})") from exc
        if not data:
            raise SourceError(f"{name}: file is empty (0 bytes after decompression)")
    try:
        text = data.decode(source.encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{name}: bytes not valid {source.encoding} at offset {exc.start} (line {line}); "
            f"set source.encoding if the file uses another encoding"
        ) from exc
    if not text.strip():
        raise SourceError(f"{name}: file is empty (no header line)")
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=source.delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceError(
            f"{name}: not parseable as CSV with delimiter {source.delimiter!r} ({exc})"
        ) from exc


def check_columns(df: pd.DataFrame, name: str, source: SourceSettings) -> None:
    mapped = source.mapping.mapped()
    missing = {canon: col for canon, col in mapped.items() if col not in df.columns}
    if not missing:
        return
    found = list(df.columns)
    hint = ""
    if len(found) == 1:
        for other in (";", "\t", "|", ","):
            if other != source.delimiter and other in found[0]:
                hint = f"; the header looks {other!r}-delimited but source.delimiter is {source.delimiter!r}"
                break
    detail = ", ".join(f"{col!r} (for {canon})" for canon, col in missing.items())
    raise SourceError(f"{name}: missing mapped column(s) {detail}; found {found}{hint}")


def unmapped_columns(df: pd.DataFrame, source: SourceSettings) -> list[str]:
    """Columns the source sends that the mapping does not use (allowed, reported)."""
    used = set(source.mapping.mapped().values())
    return [c for c in df.columns if c not in used]


def _strings(s: pd.Series) -> pd.Series:
    out = s.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def _numbers(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(values, not_numbers, not_finite): the last two mark non-null inputs that are not numbers, and
    numbers that are infinite or NaN spelled out ("inf", "1e400"); both become missing values."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        values = s.astype("float64")
        not_number = pd.Series(False, index=s.index)
        present = s.notna()
    else:
        raw = _strings(s)
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        present = raw.notna()
        # "nan" parses as a float: a number spelled as a missing value is not a value either.
        not_number = present & values.isna() & ~raw.str.fullmatch(r"[+-]?nan", case=False).fillna(False)
    not_finite = present & ~not_number & ~np.isfinite(values)
    return values.where(~not_finite), not_number, not_finite


def _timestamps(s: pd.Series, source: SourceSettings) -> tuple[pd.Series, pd.Series]:
    """(UTC timestamps, bad). Naive times are in ``source.timezone``."""
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s if getattr(s.dt, "tz", None) is not None else _localize(s, source.timezone)
        return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), pd.Series(False, index=s.index)
    raw = _strings(s)
    fmt = source.timestamp_format or "ISO8601"
    # Values carrying their own offset are absolute; the rest are wall-clock times in the source's zone.
    has_offset = raw.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        out[has_offset] = pd.to_datetime(raw[has_offset], format=fmt, errors="coerce", utc=True)
    if (~has_offset).any():
        naive = pd.to_datetime(raw[~has_offset], format=fmt, errors="coerce")
        out[~has_offset] = _localize(naive, source.timezone).dt.tz_convert("UTC")
    return out, raw.notna() & out.isna()


def _localize(ts: pd.Series, zone: str) -> pd.Series:
    # Autumn's repeated hour takes the summer-time reading; spring's missing hour shifts forward.
    return ts.dt.tz_localize(zone, ambiguous=np.ones(len(ts), dtype=bool), nonexistent="shift_forward")


def _booleans(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean"), pd.Series(False, index=s.index)
    raw = _strings(s).str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[raw.isin(_TRUE)] = True
    out[raw.isin(_FALSE)] = False
    return out, raw.notna() & out.isna()


def to_canonical(df: pd.DataFrame, name: str, source: SourceSettings) -> pd.DataFrame:
    """Map a source DataFrame to the canonical schema plus lineage columns.

    Rows are never dropped: a value that does not parse becomes null and the row's
    ``_parse_errors`` names the field and the value, for validation to quarantine.
    """
    check_columns(df, name, source)
    m = source.mapping
    n = len(df)
    idx = df.index
    errors: list[pd.Series] = []

    def flag(bad: pd.Series, field: str, original: pd.Series, what: str | pd.Series) -> None:
        """Name the field, the source's column and the value (cut short) on each bad row."""
        if bad.any():
            column = m.mapped()[field] if field in m.mapped() else field
            shown = original[bad].astype(str).map(_shown)
            reason = what[bad] if isinstance(what, pd.Series) else what
            msg = pd.Series(pd.NA, index=idx, dtype="string")
            msg[bad] = f"{field} (column {column!r}): " + shown + " " + reason
            errors.append(msg)

    def bounded(field: str, values: pd.Series) -> pd.Series:
        """A text column, flagged where a value is longer than the source allows (kept as sent)."""
        long = values.str.len() > source.max_value_length
        flag(
            long.fillna(False).astype(bool),
            field,
            values,
            f"is longer than {source.max_value_length} characters",
        )
        return values

    out = pd.DataFrame(index=idx)
    ids, problems = canonical_customer_ids(df[m.customer_id], source.max_id_length)
    flag(problems.notna(), "customer_id", df[m.customer_id], problems)
    out["customer_id"] = ids

    event_time, bad = _timestamps(df[m.event_time], source)
    flag(bad, "event_time", df[m.event_time], "is not a timestamp")
    out["event_time"] = event_time

    qty, bad, infinite = _numbers(df[m.quantity])
    flag(bad, "quantity", df[m.quantity], "is not a number")
    flag(infinite, "quantity", df[m.quantity], "is not a finite number")
    fractional = qty.notna() & (qty != np.round(qty))
    flag(fractional, "quantity", df[m.quantity], "is not a whole number")
    # Beyond 2^53 a double holds no exact integer (and an int64 may not hold it at all).
    huge = qty.abs() > 2**53
    flag(huge.fillna(False).astype(bool), "quantity", df[m.quantity], "is too large to be a count")
    qty = qty.mask(fractional | huge)
    out["quantity"] = qty.astype("Int64")

    price = amount = None
    if m.unit_price:
        price, bad, infinite = _numbers(df[m.unit_price])
        flag(bad, "unit_price", df[m.unit_price], "is not a number")
        flag(infinite, "unit_price", df[m.unit_price], "is not a finite number")
    if m.amount:
        amount, bad, infinite = _numbers(df[m.amount])
        flag(bad, "amount", df[m.amount], "is not a number")
        flag(infinite, "amount", df[m.amount], "is not a finite number")
    if amount is None:
        amount = qty * price
    if price is None:
        # A zero-quantity line has no defined unit price.
        price = amount / qty.where(qty != 0)
    out["unit_price"] = price.astype("float64")
    out["amount"] = amount.astype("float64")

    order = bounded("order_id", _strings(df[m.order_id])) if m.order_id else None
    if m.is_return:
        is_return, bad = _booleans(df[m.is_return])
        flag(bad, "is_return", df[m.is_return], "is not a boolean")
    elif order is not None and source.return_order_prefix:
        is_return = order.str.startswith(source.return_order_prefix).astype("boolean")
    else:
        is_return = (qty < 0).astype("boolean")
    out["is_return"] = is_return

    if order is None:
        # One order per customer per timestamp: the finest grouping the source allows.
        who = out["customer_id"].fillna("guest")
        when = out["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string")
        order = (who + "@" + when).astype("string")
    out["order_id"] = order
    none = pd.Series(pd.NA, index=idx, dtype="string")
    out["item_id"] = bounded("item_id", _strings(df[m.item_id])) if m.item_id else none
    out["country"] = bounded("country", _strings(df[m.country])) if m.country else none

    out["_source_file"] = name
    out["_source_row"] = np.arange(1, n + 1, dtype="int64")
    if errors:
        joined = pd.concat(errors, axis=1).apply(
            lambda r: "; ".join(v for v in r if not pd.isna(v)) or pd.NA, axis=1
        )
        out["_parse_errors"] = joined.astype("string")
    else:
        out["_parse_errors"] = pd.Series(pd.NA, index=idx, dtype="string")
    return out[RAW_SCHEMA.names].reset_index(drop=True)


def to_table(df: pd.DataFrame) -> pa.Table:
    """The canonical frame as an Arrow table with the exact raw schema."""
    return pa.Table.from_pandas(df, schema=RAW_SCHEMA, preserve_index=False)


def empty_frame() -> pd.DataFrame:
    return RAW_SCHEMA.empty_table().to_pandas()


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_frame()


def _shown(value: str, limit: int = 60) -> str:
    """A value as quoted in a parse error: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"

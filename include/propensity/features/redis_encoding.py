"""Column-at-a-time encoders of what Feast's Redis online store writes: entity keys
(``serialize_entity_key`` v3), ``ValueProto`` field bytes and ``Timestamp`` bytes, from Arrow
arrays with numpy, byte for byte what Feast's per-value Python conversion produces (the tests
compare both on every type handled). :mod:`propensity.features.feast_redis` writes them."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.value_type import ValueType

# Tags of the ValueProto fields written here: (field number << 3) | wire type.
VALUE_TAG = {
    ValueType.STRING: 0x12,  # 2, length-delimited
    ValueType.INT32: 0x18,  # 3, varint
    ValueType.INT64: 0x20,  # 4, varint
    ValueType.DOUBLE: 0x29,  # 5, fixed64
    ValueType.FLOAT: 0x35,  # 6, fixed32
    ValueType.BOOL: 0x38,  # 7, varint
}
INT32_RANGE = (-(2**31), 2**31 - 1)
# Timestamp.FromDatetime accepts 0001-01-01 .. 9999-12-31; nanoseconds must fit an int64 here.
MAX_ABS_MICROS = 9_000_000_000_000_000


class FastPathUnsupported(Exception):
    """This table or store is not one the Arrow path writes exactly as Feast would: use Feast's."""


def _varint(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 ``u``: an (n, 10) byte matrix and each row's length."""
    shifts = np.arange(0, 70, 7, dtype=np.uint64)
    shifted = u[:, None] >> shifts
    lengths = np.maximum(1, (shifted != 0).sum(axis=1))
    more = np.arange(10) < (lengths - 1)[:, None]
    return ((shifted & np.uint64(0x7F)) | (more * np.uint64(0x80))).astype(np.uint8), lengths


def _ragged(pieces: list[tuple[np.ndarray, np.ndarray]]) -> pa.LargeBinaryArray:
    """Row i: the first ``lengths[i]`` bytes of each piece's row i, concatenated."""
    mat = np.hstack([m.reshape(len(m), -1) for m, _ in pieces])
    mask = np.hstack([np.arange(m.reshape(len(m), -1).shape[1]) < lengths[:, None] for m, lengths in pieces])
    total = np.sum([lengths for _, lengths in pieces], axis=0, dtype=np.int64)
    offsets = np.zeros(len(total) + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    data = np.ascontiguousarray(mat[mask])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(total), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _const(n: int, byte: int, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, 1), byte, dtype=np.uint8), present.astype(np.int64)


def _null_mask(column: pa.Array) -> np.ndarray:
    return column.is_null().to_numpy(zero_copy_only=False)


def _int_values(name: str, column: pa.Array, via_float: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer values and null mask as Feast derives them (``int(x)`` of ``to_numpy`` output).

    Feast's ``to_numpy`` turns an integer column with nulls, or a float column, into float64:
    ``int()`` then truncates, NaN is null, and past 2**53 the float rounds (to nearest, as here).
    ``via_float`` says whether this integer column had nulls in the batch Feast converted
    (default: this column has nulls); a block of a larger column passes its column's answer.
    """
    if pa.types.is_integer(column.type):
        if via_float is None:
            via_float = column.null_count > 0
        if via_float:  # exactly Feast's conversion, then the float branch below
            column = pc.cast(column, pa.float64(), safe=False)
        else:
            if column.type == pa.uint64() and (pc.max(column).as_py() or 0) > 2**63 - 1:
                raise FastPathUnsupported(f"{name}: uint64 values past int64")
            return pc.fill_null(column, 0).to_numpy().astype(np.int64), _null_mask(column)
    if pa.types.is_floating(column.type):
        raw = pc.fill_null(column, 0).to_numpy().astype(np.float64)
        null = _null_mask(column) | np.isnan(raw)
        kept = raw[~null]
        if not np.all(np.isfinite(kept)) or np.any(np.abs(kept) >= 2**63):
            raise FastPathUnsupported(f"{name}: values out of int64 range")
        return np.where(null, 0, np.trunc(raw)).astype(np.int64), null
    raise FastPathUnsupported(f"{name}: integer feature from a {column.type} column")


def _int_bounds(name: str, column: pa.Array | pa.ChunkedArray, via_float: bool) -> tuple[int, int] | None:
    """Least and greatest value :func:`_int_values` yields over the whole column (None: no values).

    Raises :class:`FastPathUnsupported` where it would for some block of the column. Both of
    Feast's conversions (float rounding, truncation) are monotonic, so the bounds of the converted
    values are the converted bounds; NaN and nulls are skipped as ``pc.min_max`` skips them.
    """
    if pa.types.is_integer(column.type):
        lo, hi = (v.as_py() for v in pc.min_max(column).values())
        if lo is None:
            return None
        if via_float:
            lo, hi = float(lo), float(hi)  # Python rounds to nearest, as the cast does
            if max(abs(lo), abs(hi)) >= 2**63:
                raise FastPathUnsupported(f"{name}: values out of int64 range")
            return int(lo), int(hi)
        if hi > 2**63 - 1:
            raise FastPathUnsupported(f"{name}: uint64 values past int64")
        return lo, hi
    if pa.types.is_floating(column.type):
        lo, hi = (v.as_py() for v in pc.min_max(column).values())
        if lo is None or np.isnan(lo):  # every value null or NaN
            return None
        if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) >= 2**63:
            raise FastPathUnsupported(f"{name}: values out of int64 range")
        return int(lo), int(hi)  # int() truncates
    raise FastPathUnsupported(f"{name}: integer feature from a {column.type} column")


def check_values(
    name: str, value_type: ValueType, column: pa.Array | pa.ChunkedArray, via_float: bool = False
) -> None:
    """Raise :class:`FastPathUnsupported` if :func:`encode_values` would for any block of the column.

    The whole column is checked before anything is written, from its type and its bounds only.
    """
    t = column.type
    if value_type in VALUE_TAG and column.null_count == len(column):
        return  # every block of it is all null: empty values, whatever the type
    if value_type in (ValueType.INT64, ValueType.INT32):
        bounds = _int_bounds(name, column, via_float)
        if (
            value_type == ValueType.INT32
            and bounds
            and (bounds[0] < INT32_RANGE[0] or bounds[1] > INT32_RANGE[1])
        ):
            raise FastPathUnsupported(f"{name}: values out of int32 range")
        return
    if (
        (value_type == ValueType.DOUBLE and t == pa.float64())
        or (value_type == ValueType.FLOAT and t == pa.float32())
        or (value_type == ValueType.BOOL and t == pa.bool_())
        or (value_type == ValueType.STRING and (pa.types.is_string(t) or pa.types.is_large_string(t)))
    ):
        return
    raise FastPathUnsupported(f"{name}: {value_type.name} feature from a {t} column")


def encode_values(
    name: str, value_type: ValueType, column: pa.Array, via_float: bool | None = None
) -> pa.LargeBinaryArray:
    """Serialized ``ValueProto`` per row, as ``python_values_to_proto_values`` + ``SerializeToString``.

    ``via_float``: see :func:`_int_values` (integer columns only).
    """
    n = len(column)
    t = column.type
    if value_type in VALUE_TAG and column.null_count == n:  # Feast: no sample value, every row null
        return pa.array([b""] * n, pa.large_binary())
    if value_type in (ValueType.INT64, ValueType.INT32):
        values, null = _int_values(name, column, via_float)
        if value_type == ValueType.INT32 and np.any((values < INT32_RANGE[0]) | (values > INT32_RANGE[1])):
            raise FastPathUnsupported(f"{name}: values out of int32 range")
        varint, lengths = _varint(values.view(np.uint64))  # negatives: 10-byte two's complement
        return _ragged([_const(n, VALUE_TAG[value_type], ~null), (varint, np.where(null, 0, lengths))])
    if value_type == ValueType.DOUBLE and t == pa.float64():
        raw = pc.fill_null(column, 0.0).to_numpy()
        present = ~(_null_mask(column) | np.isnan(raw))
        data = raw.astype("<f8").view(np.uint8).reshape(n, 8)
        return _ragged([_const(n, VALUE_TAG[value_type], present), (data, present * 8)])
    if value_type == ValueType.FLOAT and t == pa.float32():
        raw = pc.fill_null(column, 0.0).to_numpy()
        present = ~(_null_mask(column) | np.isnan(raw))
        data = raw.astype("<f4").view(np.uint8).reshape(n, 4)
        return _ragged([_const(n, VALUE_TAG[value_type], present), (data, present * 4)])
    if value_type == ValueType.BOOL and t == pa.bool_():
        present = ~_null_mask(column)
        raw = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8).reshape(n, 1)
        return _ragged([_const(n, VALUE_TAG[value_type], present), (raw, present.astype(np.int64))])
    if value_type == ValueType.STRING and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        present = ~_null_mask(column)
        sizes = pc.fill_null(pc.binary_length(column), 0).to_numpy().astype(np.uint64)
        varint, lengths = _varint(sizes)
        header = _ragged([_const(n, VALUE_TAG[value_type], present), (varint, np.where(present, lengths, 0))])
        body = join_commands([header, column.cast(pa.large_binary())])
        return pc.fill_null(body, pa.scalar(b"", pa.large_binary()))
    raise FastPathUnsupported(f"{name}: {value_type.name} feature from a {t} column")


def check_entity_keys(join_key: str, value_type: ValueType, column: pa.Array | pa.ChunkedArray) -> None:
    """Raise :class:`FastPathUnsupported` unless every row has its own key :func:`encode_entity_keys` encodes."""
    if column.null_count:
        raise FastPathUnsupported(f"join key {join_key} has nulls")
    t = column.type
    if value_type == ValueType.STRING and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        pass
    elif value_type in (ValueType.INT64, ValueType.INT32) and pa.types.is_integer(t) and t != pa.uint64():
        lo, hi = (v.as_py() for v in pc.min_max(column).values())
        if value_type == ValueType.INT32 and lo is not None and (lo < INT32_RANGE[0] or hi > INT32_RANGE[1]):
            raise FastPathUnsupported(f"join key {join_key}: values out of int32 range")
    else:
        raise FastPathUnsupported(f"join key {join_key}: {value_type.name} from a {t} column")
    # One key per distinct value of the one join key (the encoding is one to one).
    if len(column) and pc.count_distinct(column).as_py() != len(column):
        raise FastPathUnsupported("several rows per entity key")


def encode_entity_keys(
    join_key: str, value_type: ValueType, column: pa.Array, project: str
) -> pa.LargeBinaryArray:
    """Redis keys: ``serialize_entity_key`` (version 3, one join key) followed by the project."""
    if column.null_count:
        raise FastPathUnsupported(f"join key {join_key} has nulls")
    name = join_key.encode("utf8")
    head = (
        struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name + struct.pack("<I", value_type.value)
    )
    n = len(column)
    if value_type == ValueType.STRING and (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        sizes = pc.binary_length(column).to_numpy().astype("<u4").view(np.uint8).reshape(n, 4)
        size = _ragged([(sizes, np.full(n, 4, dtype=np.int64))])
        return join_commands([head, size, column.cast(pa.large_binary()), project.encode("utf8")])
    if (
        value_type in (ValueType.INT64, ValueType.INT32)
        and pa.types.is_integer(column.type)
        and column.type != pa.uint64()
    ):
        values = column.to_numpy().astype(np.int64)
        fmt, width = ("<i8", 8) if value_type == ValueType.INT64 else ("<i4", 4)
        if width == 4 and np.any((values < INT32_RANGE[0]) | (values > INT32_RANGE[1])):
            raise FastPathUnsupported(f"join key {join_key}: values out of int32 range")
        data = values.astype(fmt).view(np.uint8).reshape(n, width)
        body = _ragged([(data, np.full(n, width, dtype=np.int64))])
        return join_commands([head + struct.pack("<I", width), body, project.encode("utf8")])
    raise FastPathUnsupported(f"join key {join_key}: {value_type.name} from a {column.type} column")


def event_micros(column: pa.Array) -> np.ndarray:
    """Event timestamps as UTC microseconds, the precision Feast's datetimes keep."""
    if not pa.types.is_timestamp(column.type) or column.null_count:
        raise FastPathUnsupported(f"event timestamps of type {column.type} or with nulls")
    raw = column.cast(pa.timestamp(column.type.unit)).cast(pa.int64()).to_numpy()
    if column.type.unit == "ns":
        if np.any(raw % 1000):  # Feast's datetimes drop them; not copied here
            raise FastPathUnsupported("event timestamps with sub-microsecond parts")
        micros = raw // 1000
    else:
        scale = {"s": 1_000_000, "ms": 1000, "us": 1}[column.type.unit]
        bound = MAX_ABS_MICROS // scale
        if np.any((raw > bound) | (raw < -bound)):
            raise FastPathUnsupported("event timestamps out of range")
        micros = raw * scale
    if np.any((micros > MAX_ABS_MICROS) | (micros < -MAX_ABS_MICROS)):
        raise FastPathUnsupported("event timestamps out of range")
    return micros


def encode_timestamps(micros: np.ndarray) -> pa.LargeBinaryArray:
    """Serialized ``Timestamp`` protos, as ``Timestamp.FromDatetime`` + ``SerializeToString``."""
    n = len(micros)
    seconds, nanos = np.divmod(micros, 1_000_000)
    nanos = nanos * 1000
    sec_varint, sec_len = _varint(seconds.view(np.uint64))
    nano_varint, nano_len = _varint(nanos.astype(np.uint64))
    has_s, has_n = seconds != 0, nanos != 0  # proto3 leaves zero fields out
    return _ragged(
        [
            _const(n, 0x08, has_s),
            (sec_varint, np.where(has_s, sec_len, 0)),
            _const(n, 0x10, has_n),
            (nano_varint, np.where(has_n, nano_len, 0)),
        ]
    )


def bulk(values: pa.Array) -> list[Any]:
    """RESP bulk string parts of each row's bytes: ``$<len>\\r\\n``, bytes, ``\\r\\n``."""
    lengths = pc.binary_length(values).cast(pa.string()).cast(pa.large_binary())
    return [b"$", lengths, b"\r\n", values, b"\r\n"]


def bulk_const(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def join_commands(parts: list[Any]) -> pa.LargeBinaryArray:
    merged: list[Any] = []
    for part in parts:  # adjacent constants as one scalar: fewer arguments to join
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        else:
            merged.append(part)
    scalars = [pa.scalar(p, pa.large_binary()) if isinstance(p, bytes) else p for p in merged]
    return pc.binary_join_element_wise(*scalars, pa.scalar(b"", pa.large_binary()))


def payload(commands: pa.LargeBinaryArray) -> memoryview:
    """The concatenated bytes of a binary array's rows (its values buffer), without a copy."""
    offsets = np.frombuffer(
        commands.buffers()[1], dtype=np.int64, count=len(commands) + 1, offset=8 * commands.offset
    )
    return memoryview(commands.buffers()[2])[offsets[0] : offsets[-1]]


def table_column(table: pa.Table, name: str) -> pa.Array:
    """One column of ``table`` as a single array (zero-copy where it is one chunk)."""
    chunks = table.column(name).chunks
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return pa.array([], table.schema.field(name).type)
    return pa.concat_arrays(chunks)


def feast_batch_starts(table: pa.Table, batch_size: int | None) -> list[int]:
    """First row of each batch Feast's output node converts (``online_write_batch_size``)."""
    if batch_size is None:
        return [0]
    lengths = [b.num_rows for b in table.to_batches(max_chunksize=batch_size)]
    return [0, *np.cumsum(lengths[:-1]).tolist()] if lengths else [0]


def via_float_rows(column: pa.ChunkedArray, starts: list[int]) -> bool | np.ndarray:
    """Whether Feast converts each row of this integer column through float64: its batch has nulls."""
    if not column.null_count:
        return False
    if len(starts) == 1:
        return True
    flags = np.add.reduceat(_null_mask(column).astype(np.int64), starts) > 0
    if flags.all():
        return True
    return np.repeat(flags, np.diff([*starts, len(column)]))

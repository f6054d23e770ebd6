"""Zones on a local folder or S3, behind one small API, with atomic partition writes.

A partition (``<zone_root>/<zone>/<dataset>/date=YYYY-MM-DD/``) holds exactly one Parquet
file, ``part-0.parquet``. Replacing it is atomic on both backends: locally the file is
written beside its destination and ``os.replace``-d in; on S3 an object becomes visible
only when its upload completes. So a killed task leaves either the old partition or the
new one, never half of either, and re-running a day replaces it exactly.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"


@dataclass(frozen=True)
class Store:
    """A filesystem plus the root path inside it (a local folder, or ``bucket/prefix`` on S3)."""

    fs: pafs.FileSystem
    root: str
    uri: str  # the root as the user wrote it, for messages and links

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri.rstrip("/"), *[p.strip("/") for p in parts if p]])

    # -- reads ---------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_dir(self, *parts: str) -> list[str]:
        """Base names directly under a folder; [] when it does not exist."""
        info = self.fs.get_file_info(pafs.FileSelector(self.path(*parts), allow_not_found=True))
        return sorted(i.base_name for i in info)

    def read_bytes(self, *parts: str) -> bytes:
        # compression=None: bytes as stored; Arrow would otherwise gunzip by extension.
        with self.fs.open_input_stream(self.path(*parts), compression=None) as fh:
            return fh.read()

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    # -- writes --------------------------------------------------------------------------
    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write one file atomically; returns its URI."""
        dest = self.path(*parts)
        if self.is_local:
            atomic_write_file(dest, data)
        else:
            # An S3 object is visible only once its upload completes: atomic by construction.
            with self.fs.open_output_stream(dest, compression=None) as fh:
                fh.write(data)
        return self.uri_of(*parts)

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def delete_dir(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_dir(path)


def atomic_write_file(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> str:
    """Write a local file atomically: a temporary file beside it, fsynced, then ``os.replace``-d in.

    A reader sees the old file or the new one, never half of either; a crash leaves no temporary
    behind (it is removed on any error). ``mode``: the file's permissions (e.g. 0o600 for secrets).
    """
    dest = os.fspath(path)
    folder = os.path.dirname(dest) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(dest)}")
    try:
        # 0o666 is narrowed by the process umask, as open() would; an explicit mode is set exactly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def open_store(uri: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> Store:
    """A :class:`Store` for a local folder or ``s3://bucket/prefix``.

    S3 credentials are read by Arrow from the standard ``AWS_*`` environment variables
    (or the instance's role); the endpoint override points at MinIO or a moto server. Keys are
    never put in the Store itself: one pickled to Spark's workers would carry them in plain text.
    Workers read S3 with their own environment's credentials.
    """
    if uri.startswith("s3://"):
        kwargs: dict[str, Any] = {"region": s3_region}
        if s3_endpoint_url:
            kwargs["endpoint_override"] = s3_endpoint_url
            kwargs["scheme"] = "https" if s3_endpoint_url.startswith("https") else "http"
            # MinIO and moto serve path-style URLs; virtual-host style needs DNS per bucket.
            kwargs["force_virtual_addressing"] = False
        return Store(pafs.S3FileSystem(**kwargs), uri[len("s3://") :], uri)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported zone URI {uri!r}: use a local path or s3://bucket/prefix")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return Store(pafs.LocalFileSystem(), os.path.abspath(path), uri)


def partition_parts(zone: str, dataset: str, day: dt.date) -> tuple[str, str, str]:
    return zone, dataset, f"date={day.isoformat()}"


def write_partition(store: Store, zone: str, dataset: str, day: dt.date, table: pa.Table) -> str:
    """Replace one day's partition with ``table`` atomically; returns the file's URI."""
    buf = io.BytesIO()
    # Deterministic bytes for identical content: no timestamps in metadata, fixed row groups.
    pq.write_table(table, buf, compression="zstd", row_group_size=1_000_000, write_statistics=True)
    return store.write_bytes(buf.getvalue(), *partition_parts(zone, dataset, day), PART_FILE)


def read_partition(store: Store, zone: str, dataset: str, day: dt.date) -> pa.Table:
    """One day's partition; raises FileNotFoundError naming it when absent."""
    parts = (*partition_parts(zone, dataset, day), PART_FILE)
    if not store.exists(*parts):
        raise FileNotFoundError(f"no partition {store.uri_of(*parts)}")
    return pq.read_table(io.BytesIO(store.read_bytes(*parts)))


def partition_exists(store: Store, zone: str, dataset: str, day: dt.date) -> bool:
    return store.exists(*partition_parts(zone, dataset, day), PART_FILE)


def list_partitions(store: Store, zone: str, dataset: str) -> list[dt.date]:
    """Dates with a complete partition (a ``date=`` folder holding the part file)."""
    out = []
    for name in store.list_dir(zone, dataset):
        if name.startswith("date=") and store.exists(zone, dataset, name, PART_FILE):
            out.append(dt.date.fromisoformat(name[len("date=") :]))
    return out

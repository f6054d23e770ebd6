"""S3 zones read and written by Spark's executors, not the driver (``spark.zone_io: executors``).

Spark here has no s3a connector (hadoop-aws is not reachable), and the driver-side path reads every
validated day through Arrow and collects every snapshot row back: on a cluster that is a
single-machine bottleneck. Here the driver only handles object keys and a few counts:

* **read**: the list of partition files is distributed, one slice per task; each task opens the
  zone with pyarrow's S3 filesystem (its own environment's credentials, never pickled keys) inside
  ``mapInArrow`` and streams the rows of its files.
* **write**: the snapshot rows are repartitioned by date; each task sorts its dates' rows, casts
  them to the snapshot schema and replaces each date's partition itself (one object, visible only
  once its upload completes, so atomic: a retried task rewrites the same bytes). The driver gets
  back (date, URI, rows) per date.

``s3a`` stays possible for clusters whose image has hadoop-aws: ``spark.zone_io: s3a`` reads the
same keys with ``spark.read.parquet("s3a://...")``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from propensity.core.storage import PART_FILE, Store, open_store, partition_parts, write_partition


def _reopen(uri: str, endpoint: str | None, region: str) -> Store:
    return open_store(uri, s3_endpoint_url=endpoint, s3_region=region)


def read_on_executors(
    spark: SparkSession,
    store: Store,
    zone: str,
    dataset: str,
    days: Sequence[dt.date],
    schema: pa.Schema,
    *,
    endpoint: str | None,
    region: str,
) -> DataFrame:
    """The partitions of ``days`` as a DataFrame of ``schema``, each file read by an executor."""
    paths = [store.path(*partition_parts(zone, dataset, d), PART_FILE) for d in days]
    uri, columns = store.uri, schema.names
    slices = max(1, min(len(paths), spark.sparkContext.defaultParallelism * 2))
    keys = spark.createDataFrame([(p,) for p in paths], "path string").repartition(slices)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fs = _reopen(uri, endpoint, region).fs
        for batch in batches:
            for path in batch.column("path").to_pylist():
                table = pq.read_table(path, filesystem=fs, columns=columns).cast(schema)
                # An empty batch after data ends PySpark's Arrow stream early: skip empty days.
                yield from (b for b in table.to_batches() if b.num_rows)

    return keys.mapInArrow(read, from_arrow_schema(schema))


RESULT_SCHEMA = pa.schema([("as_of", pa.date32()), ("uri", pa.string()), ("rows", pa.int64())])


def write_on_executors(
    frame: DataFrame,
    store: Store,
    zone: str,
    dataset: str,
    schema: pa.Schema,
    sort_key: str,
    *,
    endpoint: str | None,
    region: str,
    partitions: int,
    prepare: Callable[[pa.Table], pa.Table] | None = None,
) -> dict[dt.date, tuple[str, int]]:
    """Replace one partition per ``as_of`` date of ``frame`` from the executors; date -> (URI, rows).

    Rows are sorted by ``sort_key``, passed through ``prepare`` (per-date columns the driver-side
    path adds, e.g. the snapshot's own BG/NBD fit) and cast to ``schema`` as that path does, so a
    snapshot has the same bytes whichever path wrote it."""
    uri = store.uri

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = [b for b in batches if b.num_rows]
        if not rows:
            return
        table = pa.Table.from_batches(rows)
        target = _reopen(uri, endpoint, region)
        as_of = table.column("as_of")
        out_days, out_uris, out_rows = [], [], []
        for day in sorted(set(as_of.to_pylist())):
            part = table.filter(pc.equal(as_of, pa.scalar(day, as_of.type))).drop_columns(["as_of"])
            part = part.sort_by([(sort_key, "ascending")])
            if prepare is not None:
                part = prepare(part)
            part = part.select(schema.names).cast(schema)
            out_uris.append(write_partition(target, zone, dataset, day, part))
            out_days.append(day)
            out_rows.append(part.num_rows)
        yield pa.RecordBatch.from_arrays(
            [pa.array(out_days, pa.date32()), pa.array(out_uris), pa.array(out_rows, pa.int64())],
            schema=RESULT_SCHEMA,
        )

    written = frame.repartition(max(1, partitions), "as_of").mapInArrow(
        write, from_arrow_schema(RESULT_SCHEMA)
    )
    return {r["as_of"]: (r["uri"], r["rows"]) for r in written.collect()}


def s3a_paths(store: Store, zone: str, dataset: str, days: Sequence[dt.date]) -> list[str]:
    """The same partition files as ``s3a://`` URLs (clusters whose Spark has hadoop-aws)."""
    return [
        store.uri_of(*partition_parts(zone, dataset, d), PART_FILE).replace("s3://", "s3a://", 1)
        for d in days
    ]

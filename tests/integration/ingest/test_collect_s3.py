"""Collection against S3 (a moto server over HTTP): a landing zone in, the raw zone out."""

from __future__ import annotations

import datetime as dt
import io

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

from propensity.core.storage import list_partitions, read_partition
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest.collect import collect
from propensity.ingest.sources import SourceError

pytestmark = pytest.mark.integration

DAY = dt.datetime(2011, 3, 1, tzinfo=dt.UTC)
HEADER = "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def _landing_on_s3(s3_server, s3_bucket, make_settings):
    """An S3 client, one landed file ``a.csv`` for DAY, and settings reading that landing zone."""
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.put_object(
        Bucket=s3_bucket,
        Key="landing/date=2011-03-01/a.csv",
        Body=HEADER + "1,A,2,2011-03-01 10:00:00,1.5,7,UK\n",
    )
    settings = make_settings(
        zone_root=f"s3://{s3_bucket}/zones",
        s3_endpoint_url=s3_server,
        source={"kind": "landing", "path": f"s3://{s3_bucket}/landing"},
    )
    return s3, settings


def test_landing_zone_on_s3_to_raw_zone_on_s3(s3_server, s3_bucket, make_settings):
    s3, settings = _landing_on_s3(s3_server, s3_bucket, make_settings)
    s3.put_object(
        Bucket=s3_bucket,
        Key="landing/date=2011-03-01/b.csv",
        Body=HEADER + "C2,B,-1,2011-03-01 11:00:00,4.0,8,FR\n",
    )
    result = collect(settings, DAY, DAY + dt.timedelta(days=1))
    assert result.uri == f"s3://{s3_bucket}/zones/raw/events/date=2011-03-01/part-0.parquet"
    assert result.source_files == [
        f"s3://{s3_bucket}/landing/date=2011-03-01/{n}" for n in ("a.csv", "b.csv")
    ]

    # Read it back with a plain S3 client, not through our own storage layer.
    body = s3.get_object(Bucket=s3_bucket, Key="zones/raw/events/date=2011-03-01/part-0.parquet")[
        "Body"
    ].read()
    out = pq.read_table(io.BytesIO(body)).to_pandas()
    assert list(out["order_id"]) == ["1", "C2"]
    assert list(out["amount"]) == [3.0, -4.0]
    assert list(out["is_return"]) == [False, True]
    assert list_partitions(zone_store(settings), *RAW_EVENTS) == [dt.date(2011, 3, 1)]

    # Re-running replaces the object: same rows, no duplicates.
    collect(settings, DAY, DAY + dt.timedelta(days=1))
    again = read_partition(zone_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    pd.testing.assert_frame_equal(out, again)


def test_truncated_file_on_s3_fails_naming_it_and_keeps_the_partition(s3_server, s3_bucket, make_settings):
    import gzip

    s3, settings = _landing_on_s3(s3_server, s3_bucket, make_settings)
    collect(settings, DAY, DAY + dt.timedelta(days=1))
    key = "zones/raw/events/date=2011-03-01/part-0.parquet"
    before = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()

    blob = gzip.compress((HEADER + "1,A,2,2011-03-01 10:00:00,1.5,7,UK\n" * 5000).encode())
    s3.put_object(Bucket=s3_bucket, Key="landing/date=2011-03-01/b.csv.gz", Body=blob[:300])
    with pytest.raises(
        SourceError, match=r"landing/date=2011-03-01/b\.csv\.gz: gzip stream is damaged or truncated"
    ):
        collect(settings, DAY, DAY + dt.timedelta(days=1))
    assert s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == before

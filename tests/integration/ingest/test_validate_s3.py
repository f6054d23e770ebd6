"""Validation with every zone on S3 (a moto server over HTTP): outputs, summary, Data Docs, alerts."""

from __future__ import annotations

import datetime as dt
import io
import json

import boto3
import pyarrow.parquet as pq
import pytest

from propensity.core.alerts import read_alerts, send_alert
from propensity.ingest.collect import collect
from propensity.ingest.validate import publish, validate

pytestmark = pytest.mark.integration

START = dt.datetime(2011, 3, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)


def test_a_day_validated_on_s3_with_data_docs_and_alerts(s3_server, s3_bucket, make_settings, caplog):
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    settings = make_settings(
        zone_root=f"s3://{s3_bucket}/zones",
        s3_endpoint_url=s3_server,
        source={"kind": "landing", "path": f"s3://{s3_bucket}/landing"},
    )
    m = settings.source.mapping
    header = ",".join(
        [m.order_id, m.item_id, m.quantity, m.event_time, m.unit_price, m.customer_id, m.country]
    )
    lines = [
        f"{500 + i // 3},2{i:04d},{1 + i % 5},2011-03-01 10:{i % 60:02d}:00,1.5,{12000 + i % 9},France"
        for i in range(39)
    ]
    lines.append("599,29999,-7,2011-03-01 12:00:00,0.0,,United Kingdom")  # a stock adjustment
    s3.put_object(
        Bucket=s3_bucket, Key="landing/date=2011-03-01/a.csv", Body="\n".join([header, *lines]) + "\n"
    )
    collect(settings, START, END)

    summary = validate(settings, START, END)

    def get(key: str) -> bytes:
        return s3.get_object(Bucket=s3_bucket, Key=f"zones/{key}")["Body"].read()

    assert summary["status"] == "passed"
    assert summary["counts"] == {
        "raw": 40,
        "validated": 39,
        "quarantined": 1,
        "duplicates_removed": 0,
        "guest_rows_validated": 0,
        "non_product_validated": 0,
    }
    assert json.loads(get("reports/validation/date=2011-03-01/summary.json")) == summary
    quarantine = pq.read_table(
        io.BytesIO(get("quarantine/events/date=2011-03-01/part-0.parquet"))
    ).to_pylist()
    assert [(r["order_id"], r["quarantine_reasons"]) for r in quarantine] == [
        ("599", ["sale_quantity_positive"])
    ]
    assert pq.read_metadata(io.BytesIO(get("validated/events/date=2011-03-01/part-0.parquet"))).num_rows == 39

    # Data Docs: the day's page, the shared static files and an index, all in the zone root.
    docs = summary["outputs"]["data_docs"]
    assert docs.startswith(f"s3://{s3_bucket}/zones/reports/data_docs/validations/events/events-2011-03-01/")
    page = get(docs.split("/zones/", 1)[1]).decode()
    assert "events-2011-03-01" in page and "Unsuccessful Expectations" in page
    assert "Data Docs: " + docs in caplog.text
    assert get("reports/data_docs/static/styles/data_docs_default_styles.css")
    assert b"events-2011-03-01" in get("reports/data_docs/index.html")
    assert (
        publish(settings, START, END)["uri"]
        == f"s3://{s3_bucket}/zones/validated/events/date=2011-03-01/part-0.parquet"
    )

    # Object stores cannot append: each alert is one object under alerts/.
    send_alert("validation_failed", "ingest 2011-03-02", {"failed": ["row_count_in_band"]}, settings=settings)
    (alert,) = read_alerts(settings)
    assert alert["title"] == "ingest 2011-03-02"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="zones/alerts/")["Contents"]]
    assert len(keys) == 1 and keys[0].endswith(".json")

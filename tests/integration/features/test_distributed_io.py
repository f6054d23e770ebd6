"""S3 zones read and written by Spark's executors (``spark.zone_io: executors``) give the very
snapshot bytes the driver-side path gives, on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from collections import defaultdict

import pytest
from feature_events import EVENTS, table

from propensity.core.storage import open_store, write_partition
from propensity.core.zones import VALIDATED_EVENTS

pytestmark = pytest.mark.integration

# In a process of its own: Spark's Python workers inherit the AWS_* variables of the JVM's start,
# so the session must start with the moto credentials in its environment.
SCRIPT = """
import hashlib, json, sys
import datetime as dt
from propensity.core.settings import get_settings
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features.job import compute_features
settings = get_settings()
dates = [dt.date.fromisoformat(d) for d in sys.argv[1:]]
store = zone_store(settings)
out = {}
for mode in ("driver", "executors"):
    s = settings.model_copy(update={"spark": settings.spark.model_copy(update={"zone_io": mode})})
    uris = compute_features(s, dates)
    out[mode] = {
        d.isoformat(): hashlib.sha256(store.read_bytes(*SNAPSHOTS, f"date={d.isoformat()}", "part-0.parquet")).hexdigest()
        for d in dates
    }
    out[mode + "_uris"] = uris
print("RESULT " + json.dumps(out))
"""


def test_executors_write_the_same_snapshot_bytes_as_the_driver(s3_server, s3_bucket, tmp_path):
    import os

    root = f"s3://{s3_bucket}/zones"
    store = open_store(root, s3_endpoint_url=s3_server)
    by_day: dict[dt.date, list[dict]] = defaultdict(list)
    for row in EVENTS:
        by_day[row["event_time"].date()].append(row)
    first, last = min(by_day), max(by_day)
    for i in range((last - first).days + 1):
        day = first + dt.timedelta(days=i)
        write_partition(store, *VALIDATED_EVENTS, day, table(by_day.get(day, [])))
    dates = [last + dt.timedelta(days=1), last - dt.timedelta(days=10)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPENSITY_")}
    env |= {
        "PROPENSITY_ZONE_ROOT": root,
        "PROPENSITY_S3_ENDPOINT_URL": s3_server,
        "PROPENSITY_SPARK__MASTER": "local[2]",
        "PROPENSITY_SPARK__DRIVER_MEMORY": "1g",
        "PROPENSITY_CACHE_DIR": str(tmp_path / "cache"),
    }
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), *(d.isoformat() for d in dates)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["driver"] == result["executors"]
    assert result["executors_uris"] == [
        f"{root}/offline/customer_features/date={d.isoformat()}/part-0.parquet" for d in sorted(dates)
    ]
    # Not empty snapshots compared with each other: the latest one has the story's customers.
    latest = store.read_bytes(
        "offline", "customer_features", f"date={max(dates).isoformat()}", "part-0.parquet"
    )
    import io

    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(latest)).num_rows >= 2
    assert hashlib.sha256(latest).hexdigest() == result["executors"][max(dates).isoformat()]

"""`propensity source check PATH` as a new user types it: the proposed block runs the pipeline."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
import yaml

from propensity.core.settings import SourceSettings, committed_settings
from propensity.core.storage import read_partition
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest.collect import collect


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPENSITY_")}
    env["PROPENSITY_HOME"] = os.environ.get("PROPENSITY_HOME", os.getcwd())
    return subprocess.run(
        [sys.executable, "-m", "propensity.cli", "source", "check", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def table(synthetic_retailer):
    return synthetic_retailer.generate(synthetic_retailer.RetailerSpec())


@pytest.mark.parametrize(
    ("name", "options"),
    [("retailer.parquet", {}), ("semicolon-crlf.csv", {"delimiter": ";", "line_ending": "\r\n"})],
)
def test_the_cli_proposes_the_source_block_that_collects_the_file(
    tmp_path, synthetic_retailer, synthetic_retailer_config, table, name, options
):
    path = synthetic_retailer.write(table, tmp_path / name, **options)
    done = cli(str(path), "--timezone", "America/Chicago", "--name", "shop", "--yaml")
    assert done.returncode == 0, done.stderr
    block = yaml.safe_load(done.stdout)["source"]
    source = SourceSettings(**block)
    expected = SourceSettings(**synthetic_retailer_config["source"])
    assert source.mapping == expected.mapping and source.mapping.order_id is None
    assert (source.name, source.timezone, source.duplicates) == ("shop", "America/Chicago", "auto")
    assert not source.drops_duplicates  # no order id: identical lines are purchases
    assert source.delimiter == options.get("delimiter", ",")
    assert source.calendar.country == "US"

    # The block, pasted as the user's source: collect reads the file with it, ids unchanged.
    settings = committed_settings(
        zone_root=str(tmp_path / "zones"), cache_dir=str(tmp_path / "c"), source=block
    )
    day = synthetic_retailer.RetailerSpec().start + dt.timedelta(days=40)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    result = collect(settings, start, start + dt.timedelta(days=1))
    raw = read_partition(zone_store(settings), *RAW_EVENTS, day).to_pandas()
    assert result.rows == len(raw) > 0
    assert raw["_parse_errors"].isna().all()
    ids = set(table.column("member_id").drop_null().to_pylist())
    assert set(raw["customer_id"].dropna()) <= ids
    assert raw["customer_id"].dropna().str.startswith("0").any()  # leading zeros kept


def test_the_cli_report_and_its_errors(tmp_path, synthetic_retailer, table):
    path = synthetic_retailer.write(table, tmp_path / "r.csv", delimiter=";", line_ending="\r\n")
    done = cli(str(path), "--timezone", "America/Chicago")
    assert done.returncode == 0, done.stderr
    spec = synthetic_retailer.RetailerSpec()
    assert f"days (UTC): {spec.start} .. {spec.end - dt.timedelta(days=1)}" in done.stdout
    assert "what the first run will do:" in done.stdout
    assert "kept (no order id: each is a purchase)" in done.stdout
    assert "delimiter ';', line ending \\r\\n" in done.stdout
    missing = cli(str(tmp_path / "absent.csv"))
    assert missing.returncode == 1 and "absent.csv" in missing.stderr

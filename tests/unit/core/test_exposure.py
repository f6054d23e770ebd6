"""What listens where: a laptop install exposes nothing beyond loopback (issue 20 item 12)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _listening(pid: int) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def test_the_spark_driver_and_its_ui_listen_on_loopback_only(spark):
    spark.sparkContext.parallelize(range(4), 2).count()  # block managers and the UI are up
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    addresses = _listening(pid)
    assert addresses, "the driver JVM listens on nothing?"
    assert all(a.rsplit(":", 1)[0].removeprefix("[::ffff:").rstrip("]") == "127.0.0.1" for a in addresses), (
        addresses
    )


def test_the_airflow_ui_binds_loopback_by_default(monkeypatch):
    # Not the hermetic test mode the suite runs in (Airflow would read its test defaults instead).
    for key in ("AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__CORE__UNIT_TEST_MODE"):
        monkeypatch.delenv(key, raising=False)
    code = "from airflow.configuration import conf; print(conf.get('api', 'host'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "127.0.0.1"


@pytest.mark.parametrize("target", ["airflow"])
def test_the_admin_password_file_is_created_owner_only(tmp_path, target):
    """The Makefile writes the UI's password file 0600 before Airflow would create it world-readable."""
    recipe = subprocess.run(
        ["make", "-n", target, f"AIRFLOW_PASSWORDS={tmp_path}/p.json", "setup=", "-o", "setup"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first = next(line for line in recipe.splitlines() if "secrets.token_urlsafe" in line)
    subprocess.run(["bash", "-c", first], check=True)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o600

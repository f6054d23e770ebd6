"""One spec, two deployments: the native cluster's supervisord.conf and docker/compose.yaml describe
the same services with the same commands and environment (propensity.cluster.spec)."""

from __future__ import annotations

import configparser
import os
import shlex
from pathlib import Path

import pytest
import yaml
from supervisor.datatypes import dict_of_key_value_pairs

from propensity.cluster.compose import COMPOSE_NAME, compose_path, compose_spec, render_compose
from propensity.cluster.config import ClusterSettings
from propensity.cluster.spec import SECRET_NAMES, Target, build_spec
from propensity.cluster.supervisor import render
from propensity.core.settings import committed_settings

# Set only on this machine: Spark's loopback and log folder, and the demo's short-window training.
NATIVE_ONLY = {"SPARK_LOCAL_IP", "SPARK_LOG_DIR", "SPARK_NO_DAEMONIZE"}


@pytest.fixture
def cfg(monkeypatch, tmp_path) -> ClusterSettings:
    """The committed config/cluster.yaml, nothing from the environment, home in a temporary folder."""
    for key in list(os.environ):
        if key.startswith("PROPENSITY_CLUSTER__"):
            monkeypatch.delenv(key)
    return ClusterSettings(home=str(tmp_path / "cluster"))  # type: ignore[call-arg]


@pytest.fixture
def native(cfg):
    source = committed_settings().source
    secrets = {name: f"value-of-{name.lower()}" for name in SECRET_NAMES}
    return build_spec(cfg, Target("native", cfg, secrets), source.path, source.name)


def test_the_committed_compose_file_is_what_the_spec_renders(cfg):
    committed = compose_path().read_text()
    assert committed == render_compose(cfg), (
        "docker/compose.yaml is stale: run `python -m propensity.cluster compose`"
    )


def test_both_deployments_have_the_same_services_commands_and_environment(cfg, native):
    compose = yaml.safe_load(compose_path().read_text())["services"]
    overrides = set(cfg.demo.pipeline_overrides)
    for svc in native:
        name = COMPOSE_NAME.get(svc.name, svc.name)
        assert name in compose, f"{svc.name} runs natively but compose has no {name}"
        if not svc.pipeline:
            continue
        theirs = compose[name]
        # Same program and the same arguments, position by position; only values differ (hosts,
        # ports, folders), never which flags are given.
        assert Path(svc.command[0]).name == Path(theirs["command"][0]).name, svc.name
        assert len(svc.command) == len(theirs["command"]), (svc.command, theirs["command"])
        for ours, other in zip(svc.command[1:], theirs["command"][1:], strict=True):
            if ours.startswith("-") or other.startswith("-"):
                assert ours == other, f"{svc.name}: {ours} vs {other}"
        assert set(svc.env) - NATIVE_ONLY - overrides == set(theirs["environment"]), svc.name
    pipeline_in_compose = {n for n, s in compose.items() if s.get("image", "").startswith("propensity-")}
    assert pipeline_in_compose - {"init"} == {s.name for s in native if s.pipeline}


def test_the_compose_values_are_the_specs_for_the_compose_target(cfg):
    compose = yaml.safe_load(compose_path().read_text())["services"]
    for svc in compose_spec(cfg):
        if svc.pipeline:
            assert compose[svc.name]["command"] == svc.command, svc.name
            assert compose[svc.name]["environment"] == svc.env, svc.name


def test_supervisord_reads_back_every_command_and_environment(cfg, native):
    """Parsed with supervisor's own parser: percent escapes and quoting survive the round trip."""
    text = render(cfg, native, "/srv/propensity")
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read_string(text)
    for svc in native:
        section = f"program:{svc.name}"
        if not svc.enabled:
            assert not parser.has_section(section)
            continue
        # supervisord expands %(...)s first: a literal % is written %%.
        command = parser.get(section, "command").replace("%%", "%")
        assert shlex.split(command) == svc.command
        raw = parser.get(section, "environment", fallback="")
        env = dict_of_key_value_pairs(raw.replace("%%", "%")) if raw else {}
        assert env == svc.env
        assert parser.get(section, "stdout_logfile") == f"{cfg.logs}/{svc.name}.log"
        assert parser.get(section, "stopasgroup") == "true"


def test_the_native_cluster_binds_loopback_and_has_two_of_each_worker(native, cfg):
    names = [s.name for s in native]
    assert names.count("airflow-worker-1") == 1 and "airflow-worker-2" in names
    assert {"spark-worker-1", "spark-worker-2"} <= set(names)
    worker_ports = {
        s.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]
        for s in native
        if "worker-" in s.name and "airflow" in s.name
    }
    assert len(worker_ports) == 2, "two workers on one host need two log-server ports"
    for svc in native:
        for key, value in svc.env.items():
            assert "0.0.0.0" not in value, f"{svc.name}: {key}={value}"
        assert "0.0.0.0" not in " ".join(svc.command), svc.name
        if svc.ready:
            assert cfg.host in svc.ready[1], svc.name
    scheduler = next(s for s in native if s.name == "airflow-scheduler")
    assert scheduler.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert scheduler.env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == str(
        cfg.task_heartbeat_timeout_s
    )

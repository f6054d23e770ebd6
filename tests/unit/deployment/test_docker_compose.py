"""Static checks of the scaled-out deployment (docker/): no container engine runs here.

The compose file is validated against the Compose Specification's JSON schema, vendored as
``tests/fixtures/compose-spec.json`` from the check-jsonschema 0.39.0 wheel on PyPI
(``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, sha256 d549057e...0e64,
Apache-2.0, licence beside it). Then the settings every pipeline container resolves from its
environment are built with the real :class:`Settings` and checked to reach this deployment's
services, never a laptop default.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

AIRFLOW_COMPONENTS = {
    "api-server": ["airflow", "api-server"],
    "scheduler": ["airflow", "scheduler"],
    "dag-processor": ["airflow", "dag-processor"],
    "triggerer": ["airflow", "triggerer"],
    "celery worker": ["airflow", "celery", "worker"],
}
# Leaves of Settings that hold shared state: a container-local path would silently split it.
SHARED_STORAGE = (
    "zone_root",
    "source.path",
    "serving.repository",
    "features.registry",
    "training.mlflow_artifact_root",
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|FERNET_KEY|API_KEYS|ACCESS_KEY|ACCESS_KEY_ID)$")
HOST_PORT = re.compile(r"(?:^|://|@|,)([a-z][a-z0-9-]*):(\d{2,5})\b")
LOOPBACK = re.compile(r"(?:^|://)(?:[^@/\s]*@)?(?:127\.0\.0\.1|localhost)[:/,]")
VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ``${V}``, ``${V:-default}``, ``${V:?error}``, ``$$``."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-") and not value:
            return arg
        if op in (":?", "?") and not value:
            raise KeyError(f"${{{name}}} is required: {arg}")
        return value or ""

    return VAR.sub(one, node)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw, example_env) -> dict[str, Any]:
    """The file as compose sees it with docker/.env.example's values."""
    return interpolate(raw, example_env)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def pipeline_services(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Services that run the pipeline's code: those given a settings profile."""
    out = {}
    for name, svc in compose["services"].items():
        env = service_env(svc)
        if "PROPENSITY_PROFILE" in env:
            out[name] = env
    return out


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> scalar, through mappings and lists."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return {prefix[:-1]: node}
    out: dict[str, Any] = {}
    for k, v in items:
        out |= leaves(v, f"{prefix}{k}.")
    return out


def test_the_vendored_schema_is_the_published_one():
    import hashlib

    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_validates_against_the_compose_specification(raw, compose):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for doc in (raw, compose):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    # The schema is not vacuous: a misspelt key is caught.
    broken = {"services": {"api": {"image": "x:1", "helthcheck": {}}}}
    assert any("helthcheck" in e.message for e in validator.iter_errors(broken))


def test_every_required_variable_is_documented_and_no_secret_is_committed(raw, example_env):
    strings = [v for v in leaves(raw).values() if isinstance(v, str)]
    required = {m.group(1) for s in strings for m in VAR.finditer(s) if m.group(2) in (":?", "?")}
    assert required <= set(example_env), f"missing from .env.example: {required - set(example_env)}"
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_SECRET_KEY", "PROPENSITY_API_KEYS"} <= required
    # Every secret-looking variable of every service comes from the environment, never a literal.
    for name, svc in raw["services"].items():
        for key, value in service_env(svc).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), f"{name}.{key} is not ${{VAR:?}}"
            for cred in re.findall(r"://[^/@\s]*:([^/@\s]*)@", value):
                assert cred.startswith("${"), f"{name}.{key} has a literal password in a URL"
            assert "password=" not in value or "password=${" in value, f"{name}.{key}"
    assert all(
        v in ("change-me", "change-me-at-least-8-chars")
        for k, v in example_env.items()
        if SECRET_NAME.search(k)
    )
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_every_image_is_pinned(compose):
    images = {name: svc.get("image") for name, svc in compose["services"].items()}
    assert all(images.values()), f"services without an image: {[n for n, i in images.items() if not i]}"
    for name, image in images.items():
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
    for dockerfile in sorted(DOCKER.glob("*.Dockerfile")):
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M):
            tag = base.rpartition(":")[2]
            assert ":" in base and tag != "latest" and re.search(r"\d", tag), (
                f"{dockerfile.name}: FROM {base}"
            )
        # What the image copies exists in the repository.
        for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", dockerfile.read_text(), flags=re.M):
            for part in src.split():
                assert (ROOT / part).exists(), f"{dockerfile.name}: COPY {part} does not exist"
    built = {svc["build"]["dockerfile"] for svc in compose["services"].values() if "build" in svc}
    assert built == {"docker/airflow.Dockerfile", "docker/api.Dockerfile"}


def test_every_long_running_service_has_a_healthcheck_and_dependencies_wait_for_it(compose):
    services = compose["services"]
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot jobs finish instead of being healthy
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = (
                "service_completed_successfully"
                if services[dep].get("restart") == "no"
                else "service_healthy"
            )
            assert cond["condition"] == want, f"{name} -> {dep}: {cond['condition']}"


def test_the_deployment_has_every_component(compose):
    services = compose["services"]
    commands = {name: svc.get("command") for name, svc in services.items()}
    for component, command in AIRFLOW_COMPONENTS.items():
        assert any(c[: len(command)] == command for c in commands.values() if c), f"no Airflow {component}"
    airflow = {n: service_env(s) for n, s in services.items() if (s.get("command") or [""])[0] == "airflow"}
    # Two Celery workers (the native cluster's, propensity.cluster.spec), one of each other component.
    assert len(airflow) == len(AIRFLOW_COMPONENTS) + 1
    assert {"airflow-worker-1", "airflow-worker-2"} <= set(airflow)
    for name, env in airflow.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["PROPENSITY_DRIFT_PYTHON"] == "/opt/venv-drift/bin/python"
    images = {s["image"].split(":")[0] for s in services.values()}
    assert {"postgres", "redis", "minio/minio", "nvcr.io/nvidia/tritonserver"} <= images
    joined = [" ".join(c) for c in commands.values() if isinstance(c, list)]
    assert any("org.apache.spark.deploy.master.Master" in c for c in joined)
    assert any("org.apache.spark.deploy.worker.Worker spark://spark-master:7077" in c for c in joined)
    mlflow = " ".join(commands["mlflow"])
    assert "mlflow server" in mlflow and "--artifacts-destination s3://" in mlflow


def test_triton_loads_explicitly_from_the_repository_the_deploy_step_writes(compose):
    triton = compose["services"]["triton"]["command"]
    assert "--model-control-mode=explicit" in triton
    repo = next(a.split("=", 1)[1] for a in triton if a.startswith("--model-repository="))
    # Triton's form for an S3-compatible endpoint: s3://http://host:port/bucket/prefix
    m = re.fullmatch(r"s3://http://(minio):9000/(.+)", repo)
    assert m, repo
    for name, env in pipeline_services(compose).items():
        if "PROPENSITY_SERVING__REPOSITORY" in env:
            assert env["PROPENSITY_SERVING__REPOSITORY"] == f"s3://{m.group(2)}", name


@pytest.fixture
def resolve(tmp_path, monkeypatch):
    """Settings as a container resolves them from ``env`` (the committed config files, nothing else)."""
    import os

    from propensity.core.settings import Settings

    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("local.env"))

    def _resolve(env: dict[str, str]) -> Settings:
        for key in list(os.environ):
            if key.startswith(("PROPENSITY_", "AWS_")):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PROPENSITY_CONFIG_DIR", str(config))
        return Settings()  # type: ignore[call-arg]

    return _resolve


def test_every_pipeline_container_resolves_the_prod_profile_onto_this_deployment(compose, resolve):
    services = set(compose["services"])
    pipeline = pipeline_services(compose)
    assert {"init", "api", "airflow-worker-1", "airflow-scheduler", "airflow-dag-processor"} <= set(pipeline)
    local = leaves(resolve({}).model_dump(mode="json"))
    for name, env in pipeline.items():
        settings = resolve(env)
        assert settings.profile == "prod", name
        values = leaves(settings.model_dump(mode="json"))
        for key in SHARED_STORAGE:
            assert str(values[key]).startswith("s3://"), f"{name}: {key} = {values[key]}"
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
        assert settings.features.online_store == "redis" and "password=" in settings.features.redis_connection
        assert (settings.serving.backend, settings.serving.triton_url) == ("triton", "triton:8001")
        assert settings.training.mlflow_tracking_uri == "http://mlflow:5000"
        assert settings.training.audit_db_url.startswith("postgresql+psycopg://")
        assert settings.spark.master == "spark://spark-master:7077"
        for key, value in values.items():
            if not isinstance(value, str):
                continue
            # Whatever is a local store on the laptop (today and any field added later) is not here.
            before = str(local.get(key, ""))
            if before.startswith("sqlite:") or LOOPBACK.search(before):
                assert not value.startswith("sqlite:"), f"{name}: {key} = {value}"
                assert not LOOPBACK.search(value), f"{name}: {key} = {value}"
            for host, _ in HOST_PORT.findall(value):
                assert host in services, f"{name}: {key} points at {host}, not a compose service"
    # The API alone answers requests: keys set, and a down Redis must fail fast, not retry for seconds.
    api = pipeline["api"]
    assert api["PROPENSITY_API_KEYS"] and api["PROPENSITY_SERVING__HOST"] == "0.0.0.0"
    assert "retry=null" in api["PROPENSITY_FEATURES__REDIS_CONNECTION"]

"""The deployment's services, one spec for two targets.

``build_spec(cfg, target)`` lists every service with its command, environment and readiness
check. The ``native`` target (this machine, ``make cluster-up``) resolves hosts to the loopback
address, ports and folders from ``config/cluster.yaml`` and secrets to generated values; the
``compose`` target (``docker/compose.yaml``) resolves them to service names, the images' standard
ports and paths, and ``${VAR:?}`` references to ``docker/.env``. Services that run the pipeline's
code (``pipeline=True``) must have the same command and environment in both: the compose checker
(:mod:`propensity.cluster.compose`) compares them. Infrastructure (Postgres, Redis, S3, Triton) is
a different program per target (moto stands in for MinIO here) and is compared by name only.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from propensity.cluster.config import ClusterSettings
from propensity.cluster.hostname import SERVICE_NAME_ENV
from propensity.core.settings import project_home

SECRET_NAMES = (
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "PROPENSITY_API_KEYS",
)
COMPOSE_PORTS = {
    "redis": 6379,
    "s3": 9000,
    "mlflow": 5000,
    "airflow_api": 8080,
    "scheduler_health": 8974,
    "trigger_log_server": 8794,
    "worker_log_server": 8793,
    "spark_master": 7077,
    "spark_master_ui": 8081,
    "spark_worker_ui": 8082,
    "api": 8000,
    "triton_http": 8000,
    "triton_grpc": 8001,
    "triton_metrics": 8002,
}
COMPOSE_HOSTS = {"s3": "minio"}
HOSTNAME_CALLABLE = "propensity.cluster.hostname.service_hostname"


@dataclass
class Service:
    """One long-running process of the deployment."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    phase: int = 1  # 0: infrastructure, started (and ready) before the one-shot init; 1: after it
    ready: tuple[str, str] | None = None  # ("tcp", "host:port") or ("http", url)
    pipeline: bool = True  # runs the pipeline's image: same command and environment in compose
    enabled: bool = True
    note: str = ""


@dataclass(frozen=True)
class Target:
    """Where the spec is rendered: this machine (``native``) or ``docker/compose.yaml``."""

    kind: Literal["native", "compose"]
    cfg: ClusterSettings
    secrets: dict[str, str] = field(default_factory=dict)  # native: generated values

    @property
    def native(self) -> bool:
        return self.kind == "native"

    def host(self, service: str) -> str:
        return self.cfg.host if self.native else COMPOSE_HOSTS.get(service, service)

    def bind(self) -> str:
        return self.cfg.host if self.native else "0.0.0.0"

    def port(self, key: str, n: int | None = None) -> int:
        if not self.native:
            return COMPOSE_PORTS[key]
        if key == "worker_log_server":
            return self.cfg.ports.worker_log_server_base + 10 * (n or 1)
        if key == "spark_worker_ui":
            return self.cfg.ports.spark_worker_ui_base + (n or 1) - 1
        return int(getattr(self.cfg.ports, key))

    def secret(self, name: str) -> str:
        if self.native:
            return self.secrets.get(name, f"<{name}>")
        return f"${{{name}:?set {name} in docker/.env}}"

    # -- folders ----------------------------------------------------------------------------
    def home(self) -> str:
        return str(project_home()) if self.native else "/opt/propensity"

    def logs(self, *parts: str) -> str:
        base = str(self.cfg.logs) if self.native else "/opt/propensity/logs"
        return "/".join([base, *parts])

    def state(self, *parts: str) -> str:
        base = str(self.cfg.state) if self.native else "/opt/airflow-state"
        return "/".join([base, *parts])

    def data(self, *parts: str) -> str:
        base = str(self.cfg.data) if self.native else "/opt/propensity/data"
        return "/".join([base, *parts])

    # -- programs ---------------------------------------------------------------------------
    def exe(self, name: str) -> str:
        """A program of the pipeline's venv (native: its absolute path; compose: on the image's PATH)."""
        if not self.native:
            return name
        if name == "spark-class":
            return str(spark_home() / "bin" / "spark-class")
        return str(Path(sys.executable).with_name(name))

    def python(self) -> str:
        return sys.executable if self.native else "/opt/venv/bin/python"

    def drift_python(self) -> str:
        if not self.native:
            return "/opt/venv-drift/bin/python"
        return os.environ.get(
            "PROPENSITY_DRIFT_PYTHON", str(project_home() / ".venv-drift" / "bin" / "python")
        )

    # -- stores -----------------------------------------------------------------------------
    def pg_url(self, db: str, driver: str = "postgresql+psycopg") -> str:
        pg = self.cfg.postgres
        if self.native:
            name = {"airflow": pg.airflow_db, "mlflow": pg.mlflow_db, "predictions": pg.predictions_db}[db]
            return f"{driver}://{pg.user}@{pg.host}:{pg.port}/{name}"
        name = {"airflow": "airflow", "mlflow": "mlflow", "predictions": "propensity"}[db]
        password = self.secret("POSTGRES_PASSWORD")
        return f"{driver}://${{POSTGRES_USER:-propensity}}:{password}@postgres:5432/{name}"

    def redis(self, db: int) -> tuple[str, str]:
        """(Celery broker URL, Feast connection string) of Redis database ``db``."""
        host, port = self.host("redis"), self.port("redis")
        if self.native:
            return f"redis://{host}:{port}/{db}", f"{host}:{port},db={db}"
        password = self.secret("REDIS_PASSWORD")
        return f"redis://:{password}@{host}:{port}/{db}", f"{host}:{port},db={db},password={password}"

    def s3_endpoint(self) -> str:
        return f"http://{self.host('s3')}:{self.port('s3')}"


def spark_home() -> Path:
    """The pyspark wheel's folder: Spark's launch scripts and jars (the wheel has no sbin/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def triton_enabled(cfg: ClusterSettings) -> bool:
    """The real Triton server runs natively only when its venv (helper branch "triton") exists."""
    return cfg.triton_python.exists()


def landing_key(source_path: str, source_name: str) -> str:
    """Where the raw export is uploaded in the bucket: ``landing/<source>/<file name>``."""
    return f"landing/{source_name}/{Path(source_path).name}"


def propensity_env(t: Target, source_path: str, source_name: str, triton: bool) -> dict[str, str]:
    """What every process running the pipeline's code needs: the prod profile on this deployment."""
    bucket, s3 = t.cfg.bucket, t.s3_endpoint()
    env = {
        "PROPENSITY_PROFILE": "prod",
        "PROPENSITY_HOME": t.home(),
        "PROPENSITY_ZONE_ROOT": f"s3://{bucket}/zones",
        "PROPENSITY_S3_ENDPOINT_URL": s3,
        "PROPENSITY_S3_REGION": "us-east-1",
        "PROPENSITY_CACHE_DIR": t.data("cache"),
        "PROPENSITY_SOURCE__PATH": f"s3://{bucket}/{landing_key(source_path, source_name)}",
        "PROPENSITY_SERVING__REPOSITORY": f"s3://{bucket}/models",
        "PROPENSITY_SERVING__BACKEND": "triton" if triton else "inprocess",
        # Feast materialize writes large pipelines: no short socket timeouts here (the API has them).
        "PROPENSITY_FEATURES__REDIS_CONNECTION": t.redis(t.cfg.redis_dbs.feast)[1],
        "PROPENSITY_FEATURES__REGISTRY": f"s3://{bucket}/feast/registry.db",
        "PROPENSITY_TRAINING__MLFLOW_TRACKING_URI": f"http://{t.host('mlflow')}:{t.port('mlflow')}",
        # The experiment's artifacts: written to S3 by the client; the server serves them (--serve-artifacts).
        "PROPENSITY_TRAINING__MLFLOW_ARTIFACT_ROOT": f"s3://{bucket}/mlflow",
        "PROPENSITY_TRAINING__AUDIT_DB_URL": t.pg_url("predictions"),
        "PROPENSITY_BATCH__DB_URL": t.pg_url("predictions", "postgresql"),
        "PROPENSITY_SPARK__MASTER": f"spark://{t.host('spark-master')}:{t.port('spark_master')}",
        "PROPENSITY_SPARK__DRIVER_MEMORY": t.cfg.spark_driver_memory,
        # S3 zones read and written by the executors (features/distributed_io.py), not the driver.
        "PROPENSITY_SPARK__ZONE_IO": t.cfg.spark_zone_io,
        # Executors take a slice of a small worker; every application may use every worker.
        # Event logs: which executor (which worker) ran each task of each application.
        "PYSPARK_SUBMIT_ARGS": f"--conf spark.executor.memory={t.cfg.spark_executor_memory}"
        f" --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{t.logs('spark-events')}"
        " pyspark-shell",
        "PYSPARK_PYTHON": t.python(),
        "PYSPARK_DRIVER_PYTHON": t.python(),
        "PYTHONPATH": f"{t.home()}/include",
        # Read by pyarrow (zones, repository), boto3 (Feast registry) and MLflow's server.
        "AWS_ACCESS_KEY_ID": t.secret("S3_ACCESS_KEY"),
        "AWS_SECRET_ACCESS_KEY": t.secret("S3_SECRET_KEY"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3,
        "FEAST_S3_ENDPOINT_URL": s3,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_ENABLE_TELEMETRY": "false",
        # A tracking server that is down fails the call within ~10 s (MLflow's default retries block
        # a worker slot for minutes); the task's Airflow retries, with their delay, take it from there.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "DO_NOT_TRACK": "1",
    }
    # Empty without Triton: the deploy step writes the S3 repository and loads nothing (prod.yaml
    # names a server, which would make every deploy fail where none runs).
    env["PROPENSITY_SERVING__TRITON_URL"] = f"{t.host('triton')}:{t.port('triton_grpc')}" if triton else ""
    env["PROPENSITY_SERVING__TRITON_PROTOCOL"] = "grpc"
    if t.native:
        # The native cluster runs the demo's short window: small, fast training (see cluster.yaml).
        env |= t.cfg.demo.pipeline_overrides
    return env


def airflow_env(t: Target, base: dict[str, str]) -> dict[str, str]:
    """Airflow 3 with the CeleryExecutor: what every component shares."""
    api = f"http://{t.host('airflow-apiserver')}:{t.port('airflow_api')}"
    broker = t.redis(t.cfg.redis_dbs.celery)[0]
    return base | {
        "PROPENSITY_DRIFT_PYTHON": t.drift_python(),
        "AIRFLOW_HOME": t.home(),
        # docker/airflow/airflow_local_settings.py: the schedule ends with the replayed export.
        "PYTHONPATH": f"{t.home()}/include:{t.home()}/docker/airflow",
        "PROPENSITY_SCHEDULE_END_DATE": t.cfg.schedule_end_date or "",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": t.pg_url("airflow"),
        # Airflow 3's async engine would pick asyncpg (not installed): psycopg 3 is async too.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": t.pg_url("airflow"),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + t.pg_url("airflow"),
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(t.cfg.celery_concurrency),
        "AIRFLOW__CORE__FERNET_KEY": t.secret("AIRFLOW_FERNET_KEY"),
        "AIRFLOW__API_AUTH__JWT_SECRET": t.secret("AIRFLOW_JWT_SECRET"),
        "AIRFLOW__API__SECRET_KEY": t.secret("AIRFLOW_API_SECRET_KEY"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__HOST": t.bind(),
        "AIRFLOW__API__PORT": str(t.port("airflow_api")),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__WORKERS": str(t.cfg.airflow_api_workers),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": t.bind(),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(t.port("scheduler_health")),
        # A task whose process died stops heart-beating: failed after this, then retried elsewhere.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(t.cfg.task_heartbeat_timeout_s),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": str(t.cfg.task_heartbeat_sec),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": t.logs("airflow"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": t.logs("airflow", "dag_processor"),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(t.port("trigger_log_server")),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(t.port("worker_log_server", 1)),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin"
        if t.native
        else "${AIRFLOW_USERS:-admin:admin}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": t.state("passwords.json"),
    }


def build_spec(cfg: ClusterSettings, target: Target, source_path: str, source_name: str) -> list[Service]:
    """Every service of the deployment, in start order."""
    t = target
    triton = triton_enabled(cfg) if t.native else True
    base = propensity_env(t, source_path, source_name, triton)
    af = airflow_env(t, base)
    h = t.cfg.host
    services: list[Service] = []

    # -- infrastructure (phase 0) -------------------------------------------------------------
    services.append(
        Service(
            "redis",
            [
                "redis-server",
                "--bind",
                h,
                "--port",
                str(t.port("redis")),
                "--dir",
                t.data("redis"),
                "--appendonly",
                "yes",
            ]
            if t.native
            else ["redis-server", "--appendonly", "yes"],
            phase=0,
            ready=("tcp", f"{t.host('redis')}:{t.port('redis')}"),
            pipeline=False,
            note=f"Celery broker (db {cfg.redis_dbs.celery}) and Feast online store (db {cfg.redis_dbs.feast})",
        )
    )
    services.append(
        Service(
            "s3",
            [t.exe("moto_server"), "-H", h, "-p", str(t.port("s3"))]
            if t.native
            else ["minio", "server", "/data"],
            env={"MOTO_ALLOW_NONEXISTENT_REGION": "True"} if t.native else {},
            phase=0,
            ready=("http", f"{t.s3_endpoint()}/"),
            pipeline=False,
            note="S3 endpoint: moto_server here (in memory: data lives as long as it runs), MinIO in compose",
        )
    )
    master = f"spark://{t.host('spark-master')}:{t.port('spark_master')}"
    spark_env = base | {
        "SPARK_HOME": str(spark_home()) if t.native else "/opt/venv/lib/python3.11/site-packages/pyspark"
    }
    if t.native:
        spark_env |= {"SPARK_LOCAL_IP": h, "SPARK_LOG_DIR": t.logs("spark"), "SPARK_NO_DAEMONIZE": "1"}
    services.append(
        Service(
            "spark-master",
            [t.exe("spark-class"), "org.apache.spark.deploy.master.Master", "--host", t.host("spark-master")]
            + ["--port", str(t.port("spark_master")), "--webui-port", str(t.port("spark_master_ui"))],
            env=spark_env,
            phase=0,
            ready=("http", f"http://{t.host('spark-master')}:{t.port('spark_master_ui')}/json/"),
        )
    )

    # -- after init (phase 1) ------------------------------------------------------------------
    mlflow_env = {k: base[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    mlflow_env |= {
        "MLFLOW_S3_ENDPOINT_URL": t.s3_endpoint(),
        "MLFLOW_ENABLE_TELEMETRY": "false",
        # The store URI stays in the environment: a password on the command line shows in `ps`.
        "MLFLOW_BACKEND_STORE_URI": t.pg_url("mlflow"),
    }
    mlflow_host = f"{t.host('mlflow')}:{t.port('mlflow')}"
    services.append(
        Service(
            "mlflow",
            [t.exe("mlflow"), "server", "--host", t.bind(), "--port", str(t.port("mlflow"))]
            + ["--workers", str(cfg.mlflow_workers), "--artifacts-destination", f"s3://{cfg.bucket}/mlflow"]
            + ["--serve-artifacts", "--allowed-hosts", f"{t.host('mlflow')},{mlflow_host},localhost"],
            env=mlflow_env,
            ready=("http", f"http://{mlflow_host}/health"),
        )
    )
    for n in range(1, cfg.spark_workers + 1):
        name = f"spark-worker-{n}"
        services.append(
            Service(
                name,
                [
                    t.exe("spark-class"),
                    "org.apache.spark.deploy.worker.Worker",
                    master,
                    "--host",
                    t.host(name),
                ]
                + ["--cores", str(cfg.spark_worker_cores), "--memory", cfg.spark_worker_memory]
                + ["--webui-port", str(t.port("spark_worker_ui", n))]
                + ["--work-dir", t.data("spark-work", name) if t.native else "/tmp/spark-work"],
                env=spark_env,
                ready=("http", f"http://{t.host(name)}:{t.port('spark_worker_ui', n)}/json/"),
            )
        )
    api = f"http://{t.host('airflow-apiserver')}:{t.port('airflow_api')}"
    for name, command, ready in (
        ("airflow-apiserver", ["api-server"], ("http", f"{api}/api/v2/version")),
        (
            "airflow-scheduler",
            ["scheduler"],
            ("http", f"http://{t.host('airflow-scheduler')}:{t.port('scheduler_health')}/health"),
        ),
        ("airflow-dag-processor", ["dag-processor"], None),
        ("airflow-triggerer", ["triggerer"], None),
    ):
        services.append(
            Service(name, [t.exe("airflow"), *command], env=af | {SERVICE_NAME_ENV: name}, ready=ready)
        )
    for n in range(1, cfg.celery_workers + 1):
        name = f"airflow-worker-{n}"
        env = af | {
            SERVICE_NAME_ENV: name,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(t.port("worker_log_server", n)),
            # The Spark driver runs inside the task: executors connect back to it at this address.
            "PROPENSITY_SPARK__BIND_ADDRESS": t.host(name),
            # Celery's warm shutdown needs the signal to reach the worker alone (the image's dumb-init).
            "DUMB_INIT_SETSID": "0",
        }
        services.append(
            Service(
                name,
                # %h is Celery's own placeholder for the host name (escaped for supervisord).
                [t.exe("airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h"]
                + ["--concurrency", str(cfg.celery_concurrency)],
                env=env,
            )
        )
    if triton or t.native:
        services.append(triton_service(t, enabled=triton, base=base))
    feast = t.redis(cfg.redis_dbs.feast)[1]
    services.append(
        Service(
            "api",
            [t.python(), "-m", "propensity.cli", "serve"],
            env=base
            | {
                "PROPENSITY_SERVING__HOST": t.bind(),
                "PROPENSITY_SERVING__PORT": str(t.port("api")),
                # retry=null and short timeouts: a down store answers 503 within the SLA instead of stalling.
                "PROPENSITY_FEATURES__REDIS_CONNECTION": f"{feast},retry=null,socket_connect_timeout=0.1,socket_timeout=0.1",
                "PROPENSITY_API_KEYS": t.secret("PROPENSITY_API_KEYS"),
                # The S3 model repository is read only after the first deploy; the API waits for it.
            },
            ready=("http", f"http://{t.host('api')}:{t.port('api')}/healthz"),
            note="Triton backend" if triton else "in-process backend (no .venv-triton here)",
        )
    )
    return services


def triton_service(t: Target, *, enabled: bool, base: dict[str, str] | None = None) -> Service:
    """Triton reading the S3 repository the deploy step writes (explicit model control).

    Native: the real ``tritonserver`` of ``.venv-triton`` started by
    :mod:`propensity.serving.triton_server` (the pipeline's python), which reads the repository, the
    S3 endpoint and the ports from the same prod-profile settings the deploy step and the API read,
    and at a restart loads the model the repository holds. Compose: NVIDIA's image, the same flags.
    """
    repo = f"s3://{t.s3_endpoint()}/{t.cfg.bucket}/models"
    env: dict[str, str] = {}
    if t.native:
        command = [t.python(), "-m", "propensity.serving.triton_server", "--log", t.logs("triton-server.log")]
        server = t.cfg.triton_python.parent.parent / "lib/python3.11/site-packages/pytriton/tritonserver"
        env = dict(base or {}) | {
            "PROPENSITY_TRITON_DIR": str(server),
            "PROPENSITY_SERVING__TRITON_HOST": t.host("triton"),
            "PROPENSITY_SERVING__TRITON_HTTP_PORT": str(t.port("triton_http")),
            "PROPENSITY_SERVING__TRITON_GRPC_PORT": str(t.port("triton_grpc")),
            "PROPENSITY_SERVING__TRITON_METRICS_PORT": str(t.port("triton_metrics")),
        }
    else:
        command = ["tritonserver", f"--model-repository={repo}", "--model-control-mode=explicit"]
    return Service(
        "triton",
        command,
        env=env,
        ready=("http", f"http://{t.host('triton')}:{t.port('triton_http')}/v2/health/live"),
        pipeline=False,
        enabled=enabled,
        note="the real tritonserver" if enabled else f"disabled: {t.cfg.triton_venv} absent",
    )


def native_target(cfg: ClusterSettings, secrets: dict[str, str]) -> Target:
    return Target("native", cfg, secrets)


def which(name: str) -> str | None:
    return shutil.which(name)

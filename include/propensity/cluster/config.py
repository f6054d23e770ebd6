"""Typed settings of the native cluster: ``config/cluster.yaml``, environment on top
(``PROPENSITY_CLUSTER__<KEY>``, nested with ``__``). Nothing here runs at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from propensity.core.settings import config_dir, project_home, resolve_path


class Ports(BaseModel):
    redis: int = 16379
    s3: int = 15001
    mlflow: int = 15000
    airflow_api: int = 18080
    scheduler_health: int = 18974
    trigger_log_server: int = 18794
    worker_log_server_base: int = 18793
    spark_master: int = 17077
    spark_master_ui: int = 18081
    spark_worker_ui_base: int = 18082
    api: int = 18000
    triton_http: int = 18100
    triton_grpc: int = 18101
    triton_metrics: int = 18102


class Postgres(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    airflow_db: str = "propensity_airflow"
    mlflow_db: str = "propensity_mlflow"
    predictions_db: str = "propensity_predictions"


class RedisDbs(BaseModel):
    celery: int = 0
    feast: int = 1


class Demo(BaseModel):
    first_day: str
    last_day: str
    daily_snapshots_from: str | None = None
    training_as_of: str
    backfill_from: str
    backfill_to: str
    pipeline_overrides: dict[str, str] = Field(default_factory=dict)


class ClusterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROPENSITY_CLUSTER__", env_nested_delimiter="__", extra="ignore"
    )

    home: str = "data/cluster"
    host: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)
    postgres: Postgres = Field(default_factory=Postgres)
    redis_dbs: RedisDbs = Field(default_factory=RedisDbs)
    bucket: str = "propensity"
    celery_workers: int = 2
    celery_concurrency: int = 1
    spark_workers: int = 2
    spark_worker_cores: int = 1
    spark_worker_memory: str = "1g"
    spark_executor_memory: str = "640m"
    spark_driver_memory: str = "1g"
    spark_zone_io: str = "executors"
    mlflow_workers: int = 1
    airflow_api_workers: int = 1
    task_heartbeat_timeout_s: int = 60
    task_heartbeat_sec: int = 5
    triton_venv: str = ".venv-triton"
    schedule_end_date: str | None = None
    demo: Demo

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, config_dir() / "cluster.yaml"),
        )

    @property
    def root(self) -> Path:
        return Path(resolve_path(self.home))

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def triton_python(self) -> Path:
        return project_home() / self.triton_venv / "bin" / "python"


def cluster_settings(**overrides: object) -> ClusterSettings:
    return ClusterSettings(**overrides)  # type: ignore[arg-type]

"""Typed settings: one object, two profiles, environment on top.

Resolution order (later wins):
  1. ``config/defaults.yaml``            committed, shared by every profile
  2. ``config/profiles/<profile>.yaml``  committed, what differs between ``local`` and ``prod``
  3. ``$PROPENSITY_CONFIG_OVERLAY``      YAML files (``:``-separated): another source, another shop
  4. ``config/local.env``                gitignored, a developer's own overrides (KEY=value lines)
  5. environment variables               ``PROPENSITY_<FIELD>``, nested with ``__``
                                         (``PROPENSITY_SOURCE__PATH=...``)

Secrets (S3 keys, database passwords, API keys) are never fields here with a value
in a committed file: they come from the environment or Airflow connections.

Over 500 lines: every stage's settings in one typed tree, so each is validated at start-up.

Nothing here runs at import time; call :func:`get_settings`.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from propensity.core.config_files import (  # noqa: F401 - re-exported: the settings' public names
    OVERLAY_ENV,
    config_dir,
    merge_layers,
    project_home,
    resolve_path,
    yaml_source,
)

CANONICAL_FIELDS = (
    "customer_id",
    "event_time",
    "order_id",
    "item_id",
    "quantity",
    "unit_price",
    "amount",
    "is_return",
    "country",
)


def sqlite_url_in_home(url: str) -> str:
    """A relative ``sqlite:///path`` made absolute against the project home; other URLs unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + resolve_path(url[len(prefix) :])
    return url


class ColumnMapping(BaseModel):
    """Canonical field -> the source's column name (``None``: the source has no such column).

    Rules (documented in the README):
    * ``customer_id``, ``event_time`` and ``quantity`` are required.
    * one of ``unit_price`` / ``amount`` is required; the other is derived
      (amount = quantity x unit_price; unit_price = amount / quantity).
    * no ``order_id``: derived as ``<customer_id>@<event_time ISO>`` (one order per
      customer per timestamp).
    * no ``item_id`` / ``country``: null.
    * no ``is_return``: a return is an order id starting with ``return_order_prefix``
      when that is set, otherwise a negative quantity.
    """

    customer_id: str
    event_time: str
    quantity: str
    order_id: str | None = None
    item_id: str | None = None
    unit_price: str | None = None
    amount: str | None = None
    is_return: str | None = None
    country: str | None = None

    @model_validator(mode="after")
    def _price_or_amount(self) -> ColumnMapping:
        if self.unit_price is None and self.amount is None:
            raise ValueError("source mapping needs at least one of unit_price or amount")
        return self

    def mapped(self) -> dict[str, str]:
        """Canonical name -> source column, for the columns the source has."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TradingCalendar(BaseModel):
    """When the business is closed, so an empty day is not mistaken for a broken export."""

    country: str | None = None  # ISO 3166 code for public holidays (``holidays`` library)
    subdivision: str | None = None  # e.g. "ENG" for England's bank holidays
    closed_weekdays: list[int] = Field(default_factory=list)  # Monday=0 ... Sunday=6
    closures: list[dt.date] = Field(default_factory=list)  # single days
    closure_ranges: list[tuple[dt.date, dt.date]] = Field(default_factory=list)  # inclusive
    # Days relative to (Western) Easter Sunday when the business closes: 0 is Easter Sunday itself,
    # a closed day for large shops in England (Sunday Trading Act) though not a bank holiday.
    easter_offsets: list[int] = Field(default_factory=list)


class SourceSettings(BaseModel):
    """Where the transactions come from and how their columns map to the canonical schema."""

    name: str = "online_retail"
    kind: Literal["export", "landing"] = "export"
    # export: one file replayed a day at a time; landing: <path>/date=YYYY-MM-DD/*.csv|parquet
    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    delimiter: str = ","
    encoding: str = "utf-8"
    timezone: str = "UTC"  # zone of naive timestamps in the source
    timestamp_format: str | None = None  # strftime pattern; None: ISO-like, parsed strictly
    mapping: ColumnMapping
    return_order_prefix: str | None = None
    guest_rows: bool = False  # rows without a customer are expected (guest checkouts)
    calendar: TradingCalendar = Field(default_factory=TradingCalendar)
    # Where the demo fetches the data when ``path`` is absent (UCI id 352, an .xlsx in a zip).
    download_url: str | None = None
    # Item ids of fee/adjustment lines (postage, manual, bank charges, ...): validated rows get
    # line_kind "non_product" so features can tell them from purchases of products.
    non_product_items: list[str] = Field(default_factory=list)
    # Identical lines (every canonical column equal): drop | keep | auto. auto drops them only when
    # the source has an order id (the same line twice in one order is the export sent twice);
    # without order ids a line is a purchase, and two identical lines on a day are two purchases.
    duplicates: Literal["auto", "drop", "keep"] = "auto"
    # Bounds on what one value may be (propensity.core.ids): longer ids and texts are quarantined.
    max_id_length: int = 64
    max_value_length: int = 256

    @property
    def drops_duplicates(self) -> bool:
        """Whether validation removes exact copies of a line (``duplicates`` resolved)."""
        if self.duplicates == "auto":
            return self.mapping.order_id is not None
        return self.duplicates == "drop"


class SparkSettings(BaseModel):
    master: str = "local[*]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    # Where the driver listens (RPC, blocks, UI): loopback unless executors elsewhere must reach it.
    bind_address: str | None = "127.0.0.1"
    # How S3 zones reach the feature job: read on the driver through Arrow and collected back
    # ("driver"), read and written by the executors themselves (pyarrow's S3 inside mapInArrow,
    # features/distributed_io.py), or by Spark's own s3a connector (an image with hadoop-aws).
    zone_io: Literal["driver", "executors", "s3a"] = "driver"


class ValidationSettings(BaseModel):
    """Great Expectations suite thresholds and the batch gate (issue 3). Thresholds are data."""

    class Alerts(BaseModel):
        """Where alerts go (the whole project's notifier); the log always gets them."""

        file: bool = True  # JSON lines under <zone_root>/alerts/
        # Webhook and mail go through Airflow connections (URL, credentials, TLS live there, never
        # here): e.g. AIRFLOW_CONN_PROPENSITY_ALERTS_HTTP=https://hooks.example.com.
        http_conn_id: str | None = None  # HttpNotifier: POST the alert as JSON to <conn>/<http_endpoint>
        http_endpoint: str = ""
        smtp_conn_id: str | None = None  # SmtpNotifier: mail to smtp_to
        smtp_to: list[str] = Field(default_factory=list)
        smtp_from: str | None = None  # None: the connection's from_email
        timeout_s: float = 10.0

    # Row level: a row failing any of these is quarantined with the check's name.
    max_abs_quantity: int = 10_000  # beyond it, a keying error (the value is data: config/defaults.yaml)
    max_unit_price: float = 10_000.0  # product lines only; fee lines carry larger, odd amounts
    max_abs_amount: float = 1_000_000.0  # every line, fee lines included: beyond it, a keying error
    # Batch gate: the day fails (nothing published) when any of these is off.
    max_quarantine_share: float = 0.10
    max_duplicate_share: float = 0.25  # exact copies of an earlier line, over all lines: a file sent twice
    guest_share_band: tuple[float, float] = (0.0, 0.95)  # share of lines without a customer
    volume_factor: float = 10.0  # rows outside [usual / f, usual x f] for the weekday are suspicious
    volume_history_weeks: int = 8  # same-weekday days before D that define "usual"
    amount_median_factor: float = 4.0  # median sale amount vs the trailing median of daily medians
    amount_history_days: int = 28
    country_history_days: int = 90  # countries seen in this window are "known"; new ones are reported
    min_history: int = 3  # passed days needed before a learned band applies
    min_rows_for_distribution: int = 30  # fewer rows: shares and medians are noise, not checked
    data_docs: bool = True  # render Great Expectations Data Docs under <zone_root>/reports/data_docs/
    alerts: ValidationSettings.Alerts = Field(default_factory=lambda: ValidationSettings.Alerts())


class FeatureSettings(BaseModel):
    """Spark feature job, offline store and Feast (issue 4)."""

    history_days: int = 730  # how far back a snapshot looks (tenure, first order, gaps)
    home_countries: list[str] = Field(default_factory=list)  # is_home_country = 1 for these
    label_days: int = 30  # training label: an order in [cutoff, cutoff + label_days)
    feast_project: str = "propensity"
    registry: str = "data/feast/registry.db"  # a local path or s3://... (Feast file registry)
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "data/feast/online.db"
    # Feast's format: host:port,db=N[,password=...]; a password comes from the environment only.
    redis_connection: str = "127.0.0.1:6379,db=0"
    ttl_days: int = 1  # a snapshot serves point-in-time lookups up to this long after its date


class GateThresholds(BaseModel):
    """Promotion gate, as data. Every check reports observed value, threshold and verdict."""

    min_relative_auc_gain: float = Field(
        0.005, description="challenger AUC must exceed champion AUC x (1 + this)"
    )
    max_segment_auc_drop: float = Field(
        0.02, description="no key segment may lose more AUC than this, and none may be missing"
    )
    min_auc_first_model: float = Field(0.70, description="first model (no champion): absolute AUC floor")
    min_gain_over_recency_baseline: float = Field(0.0, description="first model: margin over recency-only")
    min_gain_over_best_baseline: float = Field(0.0, description="first model: margin over the best baseline")
    enforce_best_baseline: bool = False  # False: the best-baseline check is reported, not gating
    shadow_max_psi: float = Field(0.25, description="shadow: PSI of challenger vs champion scores at most")
    shadow_min_rank_corr: float = Field(0.80, description="shadow: Spearman rank agreement at least")
    shadow_max_error_rate: float = Field(0.0, description="shadow: share of rows the challenger fails")
    shadow_max_p99_ms: float = Field(100.0, description="shadow: one-row p99 latency (the API's SLA)")


class SelectionSettings(BaseModel):
    """Rolling-origin model selection (issue 19; :mod:`propensity.training.selection`)."""

    enabled: bool = True
    folds: int = Field(4, ge=1)  # the latest matured cutoffs before evaluation, one fold each
    min_train_cutoffs: int = Field(4, ge=1)  # a fold needs this many cutoffs matured by its own
    max_trials: int = Field(1, ge=1)  # xgb_params, then Optuna's TPE (config: 12; 1: rounds only)
    budget_s: float = 240.0  # stops the search early on a slow machine
    max_rounds: int = 600
    patience: int = Field(50, ge=1)  # stop once the folds' mean AUC has not improved this long
    half_life_days: float | None = None  # recency-weighted training cutoffs; None: equal weights
    seed: int = 7


class TrainingSettings(BaseModel):
    """Training, evaluation, gate and registry (issue 5)."""

    model_config = ConfigDict(validate_default=True)

    model_name: str = "purchase_propensity"
    experiment: str = "purchase_propensity"
    # Local: a SQLite file and a folder; prod: an MLflow server or Postgres + S3 (from the environment).
    mlflow_tracking_uri: str = "sqlite:///data/mlflow.db"
    mlflow_artifact_root: str = "data/mlartifacts"
    # Alias moves and their audit trail: SQLite locally, Postgres in prod (compare-and-set lives here).
    audit_db_url: str = "sqlite:///data/registry_audit.db"
    label_horizon_days: int = 30
    cutoff_step_days: int = 7
    cutoff_weekday: int = 0  # cutoffs fall on Mondays: one snapshot grid shared by every training run
    # The first cutoff leaves this much history before it, so features are not all cold-start.
    min_history_days: int = 90
    # Only the most recent cutoffs train: rows grow with customers x cutoffs, and a long history
    # must not make training unbounded. 52 weekly cutoffs (a year, every season) of a 20,000-customer
    # retailer are ~1 M rows (~200 MB): a laptop's training set.
    max_cutoffs: int = Field(default=52, ge=1)
    eval_cutoffs: int = 2  # most recent matured cutoffs: evaluation only, never trained on
    validation_cutoffs: int = 1  # the latest training cutoffs: early stopping only
    xgb_params: dict[str, Any] = Field(
        default_factory=lambda: {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "eval_metric": "auc",
            "max_depth": 4,
            "eta": 0.05,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 5,
            "seed": 7,
            "nthread": 2,
        }
    )
    num_boost_round: int = 600
    early_stopping_rounds: int = 40
    # Optional small search: a few max_depth/eta pairs, stopped when the time budget runs out.
    search_enabled: bool = False
    search_budget_s: float = 60.0
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    segment_min_size: int = 100
    # Key segments' tenure bands, by their edges in days: [90, 270] -> <90d, 90-270d, 270d+.
    tenure_bands_days: list[int] = Field(default_factory=lambda: [90, 270])
    bootstrap_samples: int = 500
    bootstrap_seed: int = 7
    gate: GateThresholds = Field(default_factory=GateThresholds)

    _sqlite_urls = field_validator("mlflow_tracking_uri", "audit_db_url")(sqlite_url_in_home)

    @model_validator(mode="after")
    def _room_for_every_split(self) -> TrainingSettings:
        needed = self.eval_cutoffs + self.validation_cutoffs + 1
        if self.max_cutoffs < needed:
            raise ValueError(
                f"training.max_cutoffs={self.max_cutoffs} leaves no training cutoff: eval_cutoffs "
                f"({self.eval_cutoffs}) + validation_cutoffs ({self.validation_cutoffs}) + 1 = {needed} at least"
            )
        return self

    @field_validator("mlflow_artifact_root")
    @classmethod
    def _artifacts_absolute(cls, v: str) -> str:
        return resolve_path(v)


class ServingSettings(BaseModel):
    """Triton repository, model backends and the prediction API (issue 6)."""

    model_name: str = "propensity"
    # Triton model repository: a folder (relative to the project home) or s3://bucket/prefix.
    repository: str = "models"
    # inprocess: xgboost loads the repository's file; triton: Triton Inference Server (tritonclient) at
    # triton_url (host:port of its gRPC/HTTP endpoint; None: no server, but triton_host's with triton)
    backend: Literal["inprocess", "triton"] = "inprocess"
    triton_url: str | None = None
    triton_protocol: Literal["http", "grpc"] = "grpc"
    triton_host: str = "127.0.0.1"
    triton_http_port: int = 8100
    triton_grpc_port: int = 8101
    triton_metrics_port: int = 8102
    triton_start_timeout_s: float = 120.0  # propensity.serving.triton_server: up, models loaded
    request_timeout_s: float = 0.09  # one inference call (connect and answer), within the 100 ms SLA
    # The online store, as the API reads it: each read gives up after this (connect and read), and
    # after breaker_failures failed lookups in a row the API answers 503 at once for breaker_reset_s.
    feature_timeout_s: float = 0.05
    breaker_failures: int = 3
    breaker_reset_s: float = 1.0
    ready_timeout_s: float = 60.0  # a deploy's load_model until the version is READY
    # Triton config (models/config.pbtxt.tmpl)
    max_batch_size: int = 32768
    instance_count: int = 1
    # Triton's dynamic batcher batches whatever is queued; a delay makes every call wait for it
    # when the batch cannot fill (max_batch_size is far above a request): 100 us cost 0.14 ms per
    # call (tritonclient gRPC, 4 rows: 1.02 -> 0.88 ms). The API batches its own requests already.
    max_queue_delay_us: int = Field(default=0, ge=0)
    # FIL's cpu_nthread: threads per model call. One, as the in-process backend predicts: the API
    # sends a few rows at a time, and OpenMP threads spinning after each call starve the API, the
    # server and its backend process of the cores they share (bench_api: p99 at concurrency 8).
    cpu_nthread: int = Field(default=1, ge=1)
    # Deploy parity check: served model vs the source booster on a fixed seeded sample.
    parity_rows: int = 256
    parity_tolerance: float = 1e-6
    # Prediction API
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 100  # customer ids per POST /predict
    # Request bodies over this many bytes get 413 before they are read (None: what max_batch ids
    # of max_id_length characters can take as JSON, escapes included).
    max_body_bytes: int | None = None
    # How often a running API reads the deployment record and swaps in a newly deployed model
    # (0: never; the API then serves what it loaded at start until restarted).
    reload_interval_s: float = 1.0
    unknown_customer: Literal["404", "cold_start"] = "404"
    fallback_to_inprocess: bool = False  # model server down: score in-process and flag it
    auth_required: bool = True
    api_keys_env: str = "PROPENSITY_API_KEYS"  # name of the variable holding comma-separated keys
    # Which side endpoints need the key too. Metrics: None = open on a loopback bind only (a
    # scraper on the same host), key required on any other bind. Docs and the OpenAPI schema: open
    # unless set (clients and fuzzers read the contract).
    protect_metrics: bool | None = None
    protect_docs: bool = False
    shadow_enabled: bool = True
    prediction_log_dir: str = "predictions/log"  # under the zone root
    prediction_log_flush_rows: int = 500
    prediction_log_flush_s: float = 5.0

    @field_validator("repository")
    @classmethod
    def _absolute_repository(cls, v: str) -> str:
        return resolve_path(v)

    @model_validator(mode="after")
    def _triton_server_address(self) -> ServingSettings:
        if self.backend == "triton" and not self.triton_url:
            port = self.triton_grpc_port if self.triton_protocol == "grpc" else self.triton_http_port
            self.triton_url = f"{self.triton_host}:{port}"
        return self


class DriftSettings(BaseModel):
    """Drift detectors, policy and cooldown (issue 8). Thresholds are data: the policy reads them here."""

    # Data drift: a feature drifts only when its test is significant after the correction AND
    # its effect size crosses the threshold (large samples make tiny shifts significant).
    numeric_test: Literal["ks", "cvm"] = "ks"
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    p_val: float = 0.05
    effect_size: Literal["psi", "wasserstein", "either"] = "psi"
    psi_threshold: float = 0.2
    wasserstein_threshold: float = 0.1  # Wasserstein-1 over the reference's standard deviation
    psi_bins: int = 10
    categorical_features: list[str] = Field(default_factory=list)
    # Features whose distribution moves with the calendar by construction, not with the world:
    # where history starts at a fixed date, every customer's tenure grows a day per day.
    exclude_features: list[str] = Field(default_factory=list)
    min_drifted_features: int = 1  # data drift needs at least this many drifted features
    max_rows: int = 100_000  # per side; larger windows are sampled (seeded by the date)
    # Prediction drift: the score distribution, KS and PSI on the same rule.
    score_p_val: float = 0.05
    score_psi_threshold: float = 0.2
    # Concept drift: realised AUC of matured predictions vs the champion's evaluation AUC.
    label_horizon_days: int = 30
    window_days: int = 7  # days of served traffic (and of matured predictions) per check
    min_matured: int = 200
    auc_drop: float = 0.05
    severe_auc_drop: float = 0.10
    calibration_error: float = 0.10  # expected calibration error (ECE) that counts as drift
    # Which signals may trigger retraining, and the cooldown between triggers.
    trigger_on: list[Literal["data", "prediction", "concept"]] = Field(
        default_factory=lambda: ["data", "prediction", "concept"]
    )
    cooldown_days: int = 7
    history_path: str = "drift/triggers.json"  # under the zone root
    report_dir: str = "reports/drift"  # under the zone root
    trend_days: int = 60  # realised-quality trend shown in the report


class BatchSettings(BaseModel):
    """Nightly batch scoring into the predictions table (issue 7)."""

    # sqlite:///<path> (local) or postgresql://user@host:port/db (prod). Never a password here:
    # libpq reads PGPASSWORD, or set the whole URL in $PROPENSITY_BATCH__DB_URL.
    db_url: str = "sqlite:///data/predictions.db"
    db_schema: str | None = None  # Postgres schema of the tables; None: the search_path's (public)
    connect_timeout_s: int = 10  # a down database fails the task after this, and the retry succeeds
    max_feature_age_days: int = 0  # score day D from the latest snapshot in [D - this, D]
    partitions: int = 0  # at least this many scoring tasks; 0: one per row group of the snapshot (1 M rows)
    arrow_batch_rows: int = 50_000  # rows per Arrow batch a task predicts and COPYs at a time
    top_n: int = 10  # top-scored customers returned (and printed by the demo)

    _sqlite_url = field_validator("db_url")(sqlite_url_in_home)


class DemoSettings(BaseModel):
    """``make demo``'s story, as dates relative to the data (``propensity.demo.demo_dates``)."""

    first_day: dt.date | None = None  # None: the source's first day with events
    last_day: dt.date | None = None  # None: the source's last day with events
    daily_days: int = 9  # the final days, run as daily ingest + features DagRuns
    drift_days: int = 30  # drift DagRuns over the days before those; training is as of the day before


class Settings(BaseSettings):
    """Everything the pipeline needs to know about where it runs."""

    model_config = SettingsConfigDict(env_prefix="PROPENSITY_", env_nested_delimiter="__", extra="ignore")
    committed_files_only: ClassVar[bool] = False  # True: ignore the environment and local.env

    profile: Literal["local", "prod"] = "local"
    # Root of every zone (raw/, validated/, quarantine/, offline/, ...): a folder or s3://bucket/prefix.
    zone_root: str
    # Endpoint of an S3-compatible store (MinIO, moto); None: AWS itself. Keys come from the
    # standard AWS_* environment variables, never from this file.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    cache_dir: str = "data/cache"
    source: SourceSettings
    spark: SparkSettings = Field(default_factory=SparkSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @field_validator("zone_root", "cache_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return resolve_path(v)

    @model_validator(mode="after")
    def _absolute_source(self) -> Settings:
        self.source.path = resolve_path(self.source.path)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        folder = config_dir()
        if cls.committed_files_only:
            return (init_settings, yaml_source(settings_cls, folder, overlays=False))
        # config/local.env: PROPENSITY_* lines, the environment's syntax (prefix and "__" nesting).
        local_env = DotEnvSettingsSource(settings_cls, env_file=folder / "local.env")
        return (init_settings, env_settings, local_env, yaml_source(settings_cls, folder))


class _CommittedSettings(Settings):
    """Settings from the committed files alone: no environment, no local.env (hermetic tests, benches)."""

    committed_files_only: ClassVar[bool] = True


def committed_settings(**overrides: Any) -> Settings:
    """The committed defaults (and profile) deep-merged with ``overrides``, ignoring the environment
    and ``config/local.env``: what tests and benchmarks build their settings from."""
    return _CommittedSettings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()  # type: ignore[call-arg]

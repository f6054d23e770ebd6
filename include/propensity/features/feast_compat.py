"""Feast behind one module: what the project needs of Feast beyond ``FeatureStore``'s documented calls.

Each use is checked once, when its object is built, against the shape it relies on; when a
check fails the code logs one line and takes the documented path instead, which gives the same
answers, only slower. ``tests/unit/features/test_feast_contract.py`` pins every shape (and fails
loudly when a Feast upgrade changes one); ``bench/bench_adapters.py`` measures each fast path
against its documented one.

* Online reads (:func:`online_reader`): the FeatureService's views, features and join key are
  resolved once with the registry's getters, then each request calls the provider's
  ``online_read`` (``FeatureStore.provider``, the interface every online store implements) once
  per view. Documented path: ``FeatureStore.get_online_features(...).to_dict()`` per request.
  Feast's private request helpers (``feast.utils._get_online_request_context``,
  ``_get_unique_entities``, ``_get_entity_key_protos``) are no longer used: the public
  resolution reads as fast (see :class:`ProviderReader`).
* The Redis layout the batch engine writes (:func:`field_hash`, :func:`redis_view_name`,
  :func:`redis_client`): murmur3 of ``<view>:<feature>``, the versioned view name, and a client
  for the store's ``connection_string`` in the format Feast documents. These replace
  ``feast.infra.online_stores.helpers._mmh3``, ``redis._versioned_fv_name`` and
  ``RedisOnlineStore._get_client``; the contract test holds them to those.
* The batch engine hook (:func:`engine_hook_problem`): :class:`~propensity.features.feast_redis.ArrowRedisEngine`
  overrides ``ComputeEngine.materialize`` (the method providers call) and swaps the output node
  of Feast's local plan. If the hook changed shape, the engine runs Feast's local engine unchanged.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# -- online reads ---------------------------------------------------------------------------


class FeastShapeChanged(Exception):
    """A Feast API this module relies on is missing or has another shape: take the documented path."""


@dataclass(frozen=True)
class FeatureRows:
    """Online features of a list of customers, in the reader's column order."""

    values: np.ndarray  # float32 [n, f]; NaN where the store has no value
    found: np.ndarray  # bool [n]: the store knows the customer
    timestamps: list[dt.datetime | None]  # when each customer's features were computed (whole seconds)

    @classmethod
    def of(cls, values: np.ndarray, found: np.ndarray, seconds: list[int]) -> FeatureRows:
        """``seconds``: each customer's latest event time among the service's views; 0 = none."""
        return cls(values, found, [dt.datetime.fromtimestamp(t, dt.UTC) if t > 0 else None for t in seconds])


class ProviderReader:
    """The service's views resolved once; per request, ``provider.online_read`` once per view.

    Values and timestamps are converted as ``OnlineResponse.to_dict`` converts them, so both
    readers give the same rows (the contract test compares them value for value).
    bench_adapters (Redis, p50): 0.27 ms for 1 customer, 0.74 ms for 8, vs 0.59 and 1.55 ms through
    ``get_online_features``; Feast's private request helpers read no faster (0.29, 0.78 ms): removed.
    """

    path = "online_read"

    def __init__(self, store: Any, service: Any, columns: Sequence[str], entity_key: str) -> None:
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        self.store, self.config, self.entity_key = store, store.config, entity_key
        self.provider = getattr(store, "provider", None)
        _check_signature(
            getattr(self.provider, "online_read", None),
            "provider.online_read",
            ("config", "table", "entity_keys", "requested_features"),
        )
        on_demand = {v.name for v in store.list_on_demand_feature_views()}
        column = {name: j for j, name in enumerate(columns)}
        self.views: list[tuple[Any, list[str], list[tuple[str, int]]]] = []
        key_types = set()
        for projection in service.feature_view_projections:
            if projection.name in on_demand:
                raise ValueError(f"feature service {service.name} has on-demand views: not served here")
            if projection.join_key_map or getattr(projection, "version_tag", None) is not None:
                raise FeastShapeChanged(f"view {projection.name}: a join-key map or version in the service")
            view = store.get_feature_view(projection.name)
            if not getattr(view, "enabled", True):
                raise FeastShapeChanged(f"view {projection.name} is disabled")
            view = view.with_projection(projection)
            keys = [(c.name, c.dtype.to_value_type()) for c in view.entity_columns]
            if [name for name, _ in keys] != [entity_key]:
                raise FeastShapeChanged(f"view {projection.name} is keyed by {[n for n, _ in keys]}")
            key_types.add(keys[0][1])
            names = [f.name for f in view.projection.features]
            self.views.append((view, names, [(n, column[n]) for n in names if n in column]))
        if len(key_types) != 1:
            raise FeastShapeChanged(
                f"join key {entity_key} has the value types {sorted(map(str, key_types))}"
            )
        self.key_type = key_types.pop()
        self.n_columns = len(columns)
        self._to_protos: Callable[..., list[Any]] = python_values_to_proto_values
        self._to_python: Callable[[Any], Any] = feast_value_type_to_python_type

    def read(self, keys: Sequence[str]) -> FeatureRows:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        rows_of: dict[str, list[int]] = {}  # each key read once, answered on each of its rows
        for i, key in enumerate(keys):
            rows_of.setdefault(key, []).append(i)
        entity_keys = [
            EntityKey(join_keys=[self.entity_key], entity_values=[proto])
            for proto in self._to_protos(list(rows_of), self.key_type)
        ]
        destinations = list(rows_of.values())
        out = _Rows(len(keys), self.n_columns)
        for view, requested, columns in self.views:
            read = self.provider.online_read(
                config=self.config,
                table=view,
                entity_keys=entity_keys,
                # a copy: online stores append their timestamp field to the list they are given
                requested_features=list(requested),
            )
            out.merge(read, destinations, columns, self._to_python)
        return out.rows()


class _Rows:
    """Rows being filled from ``online_read`` answers, converted as ``OnlineResponse.to_dict`` does."""

    def __init__(self, n: int, n_columns: int) -> None:
        self.values = np.full((n, n_columns), np.nan, dtype=np.float32)
        self.found = np.zeros(n, dtype=bool)
        self.seconds = [0] * n

    def merge(
        self,
        read: Sequence[tuple[Any, Any]],
        destinations: Sequence[Sequence[int]],
        columns: Sequence[tuple[str, int]],
        to_python: Callable[[Any], Any],
    ) -> None:
        """One view's answers, one per entity key, onto the rows each key was asked for."""
        from google.protobuf.timestamp_pb2 import Timestamp

        values, found, seconds = self.values, self.found, self.seconds
        for (row_ts, data), rows in zip(read, destinations, strict=True):
            if row_ts is not None:
                stamp = Timestamp()
                stamp.FromDatetime(row_ts)  # to_dict's ``__ts``: whole seconds
                for i in rows:
                    seconds[i] = max(seconds[i], stamp.seconds)
            if data is None:
                continue
            for name, j in columns:
                proto = data.get(name)
                if proto is None:
                    continue
                kind = proto.WhichOneof("val")
                if kind is None:  # the store has no value
                    continue
                v = getattr(proto, kind) if kind in _SCALARS else to_python(proto)
                if v is None:
                    continue
                for i in rows:
                    values[i, j] = v
                    found[i] = True

    def rows(self) -> FeatureRows:
        return FeatureRows.of(self.values, self.found, self.seconds)


# Value kinds whose proto field is already the Python value to_dict answers.
_SCALARS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "bool_val"})


class ServiceReader:
    """The documented path: ``FeatureStore.get_online_features(service, ...).to_dict()`` per request."""

    path = "get_online_features"

    def __init__(self, store: Any, service: Any, columns: Sequence[str], entity_key: str) -> None:
        self.store, self.service, self.columns, self.entity_key = store, service, list(columns), entity_key
        # Every feature's timestamp counts, string ones included, as the provider path's views do.
        self.stamped = [f.name for p in service.feature_view_projections for f in p.features]

    def read(self, keys: Sequence[str]) -> FeatureRows:
        n = len(keys)
        data = self.store.get_online_features(
            features=self.service, entity_rows={self.entity_key: list(keys)}
        ).to_dict(include_event_timestamps=True)
        values = np.full((n, len(self.columns)), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        for j, name in enumerate(self.columns):
            for i, v in enumerate(data[name]):
                if v is not None:
                    values[i, j], found[i] = v, True
        seconds = [0] * n
        for name in self.stamped:
            seconds = [max(s, int(t)) for s, t in zip(seconds, data[f"{name}__ts"], strict=True)]
        return FeatureRows.of(values, found, seconds)


OnlineReader = ProviderReader | ServiceReader


def online_reader(store: Any, service: Any, columns: Sequence[str], entity_key: str) -> OnlineReader:
    """The provider path where Feast has the shape it relies on, else ``get_online_features`` (logged)."""
    try:
        return ProviderReader(store, service, columns, entity_key)
    except FeastShapeChanged as why:
        log.warning("Feast online reads through get_online_features (slower): %s", why)
        return ServiceReader(store, service, columns, entity_key)


# -- the Redis layout the batch engine writes -----------------------------------------------


def field_hash(view_name: str, feature: str) -> bytes:
    """The hash field of one feature in Feast's Redis layout: murmur3 (x86, 32 bit) of
    ``<view>:<feature>``, 4 bytes little-endian (``feast.infra.online_stores.helpers._mmh3``)."""
    import mmh3

    return mmh3.hash(f"{view_name}:{feature}", signed=False).to_bytes(4, "little")


def redis_view_name(view: Any, config: Any) -> str:
    """The view's name in Redis hash fields: versioned when the registry enables online versioning."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    return compute_versioned_name(view, bool(config.registry.enable_online_feature_view_versioning))


def parse_connection_string(connection_string: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Feast's Redis ``connection_string``: ``host:port[,host:port...][,key=value...]``, values as
    JSON where they parse (``db=1``, ``ssl=true``, ``retry=null``), else strings."""
    import json

    nodes = [
        dict(zip(("host", "port"), part.split(":"), strict=False))
        for part in connection_string.split(",")
        if "=" not in part
    ]
    params: dict[str, Any] = {}
    for part in connection_string.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
    return nodes, params


def redis_client(online_store_config: Any) -> Any:
    """A redis-py client for a plain Redis online store (what ``RedisOnlineStore`` connects to)."""
    import redis

    nodes, params = parse_connection_string(online_store_config.connection_string)
    return redis.Redis(host=nodes[0]["host"], port=nodes[0]["port"], **params)  # as Feast: port as written


# -- the batch engine hook ------------------------------------------------------------------


def engine_hook_problem() -> str | None:
    """Why :class:`ArrowRedisEngine` cannot hook into Feast's local engine (None: it can).

    It relies on: ``ComputeEngine.materialize(registry, tasks)`` being what providers call; the
    local plan being built by ``LocalFeatureBuilder(registry, task, backend=)`` with its output
    node made by ``build_output_nodes(view, input_node)``; ``LocalOutputNode(name, feature_view,
    inputs=)`` with ``get_single_table(context)``; ``ExecutionContext`` carrying ``repo_config``,
    ``online_store``, ``offline_store`` and ``node_outputs``.
    """
    try:
        from feast.infra.compute_engines.base import ComputeEngine
        from feast.infra.compute_engines.dag.context import ExecutionContext
        from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
        from feast.infra.compute_engines.local.nodes import LocalOutputNode

        _check_signature(ComputeEngine.materialize, "ComputeEngine.materialize", ("registry", "tasks"))
        _check_signature(
            ComputeEngine.get_execution_context, "ComputeEngine.get_execution_context", ("registry", "task")
        )
        _check_signature(LocalFeatureBuilder.__init__, "LocalFeatureBuilder", ("registry", "task", "backend"))
        _check_signature(
            LocalFeatureBuilder.build_output_nodes,
            "LocalFeatureBuilder.build_output_nodes",
            ("view", "input_node"),
        )
        _check_signature(LocalOutputNode.__init__, "LocalOutputNode", ("name", "feature_view", "inputs"))
        _check_signature(LocalOutputNode.get_single_table, "LocalOutputNode.get_single_table", ("context",))
        fields = set(getattr(ExecutionContext, "__dataclass_fields__", {})) or set(
            inspect.signature(ExecutionContext).parameters
        )
        missing = {"repo_config", "online_store", "offline_store", "node_outputs"} - fields
        if missing:
            raise FeastShapeChanged(f"ExecutionContext lacks {sorted(missing)}")
    except (ImportError, AttributeError, FeastShapeChanged) as why:
        return f"{type(why).__name__}: {why}"
    return None


def write_paths(store: Any) -> dict[str, str]:
    """Which write path each view's last materialization took, as the project's engine records it."""
    engine = getattr(store.provider, "batch_engine", None)
    return dict(getattr(engine, "paths", {}))


def _check_signature(fn: Any, what: str, params: Sequence[str]) -> None:
    if not callable(fn):
        raise FeastShapeChanged(f"{what} is missing")
    try:
        have = inspect.signature(fn).parameters
    except (TypeError, ValueError) as exc:
        raise FeastShapeChanged(f"{what}: no signature ({exc})") from exc
    missing = [p for p in params if p not in have]
    if missing:
        raise FeastShapeChanged(f"{what} has no parameter(s) {missing}: {list(have)}")

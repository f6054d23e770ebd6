"""Where the API reads a customer's online features: the model's Feast FeatureService.

:class:`FeastFeatureSource` resolves the service's views, join keys and entity types once, then
reads with the provider's ``online_read`` per request (through :mod:`propensity.features.feast_compat`,
the project's one adapter to Feast).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from propensity.features.feast_compat import FeatureRows
from propensity.features.spec import ENTITY_KEY

if TYPE_CHECKING:
    from propensity.core.settings import Settings

log = logging.getLogger(__name__)


class FeatureStoreUnavailable(RuntimeError):
    """The online store cannot be read (maps to HTTP 503, naming the cause)."""


class FeatureSource(Protocol):
    """Where the API reads a customer's features from (Feast in every deployment)."""

    feature_names: list[str]

    def get(self, customer_ids: Sequence[str]) -> FeatureRows: ...

    def check(self) -> None:
        """Raise :class:`FeatureStoreUnavailable` unless the store answers."""
        ...


class FeastFeatureSource:
    """Features through the model's Feast FeatureService (the same definitions as training).

    Reads through :func:`propensity.features.feast_compat.online_reader`: the service's views,
    features and join key resolved once, then the provider's ``online_read`` per view and
    request, instead of ``FeatureStore.get_online_features`` (which resolves and builds a
    response proto per request); both give the same rows. ``path`` says which one runs.
    """

    def __init__(self, store: Any, feature_service: str, entity_key: str = ENTITY_KEY) -> None:
        from feast.types import Bytes, String

        from propensity.features.feast_compat import online_reader

        self.store = store
        self.entity_key = entity_key
        # Resolved once: a registry read per request would cost more than the lookup itself.
        self.service = store.get_feature_service(feature_service)
        # Model inputs are the service's numeric fields; strings (e.g. ``country``, kept in the
        # service for evaluation segments) are not fed to the model.
        self.feature_names = [
            f.name
            for proj in self.service.feature_view_projections
            for f in proj.features
            if f.dtype not in (String, Bytes)
        ]
        self._reader = online_reader(store, self.service, self.feature_names, entity_key)
        self.path = self._reader.path
        self.kind = type(store.config.online_store).__name__
        conn = getattr(store.config.online_store, "connection_string", None)
        if conn is not None and "retry=" not in conn:
            # redis-py 7 retries a refused connection with backoff for ~5 s: a down store would
            # answer 503 only after that, far past the SLA.
            log.warning(
                "Redis connection string lacks 'retry=null,socket_timeout=...': a down store will stall requests"
            )

    def get(self, customer_ids: Sequence[str]) -> FeatureRows:
        try:
            return self._reader.read(customer_ids)
        except Exception as exc:  # redis, sqlite and network errors alike: the store is down
            raise FeatureStoreUnavailable(
                f"online store ({self.kind}) unreachable: {type(exc).__name__}: {exc}"
            ) from exc

    def check(self) -> None:
        self.get(["__readiness_probe__"])


def feast_feature_source(settings: Settings) -> FeastFeatureSource:
    """The Feast store (with the serving timeouts) and the FeatureService the model was trained on."""
    from propensity.features.spec import FEATURE_SERVICE
    from propensity.features.store import feature_store

    return FeastFeatureSource(feature_store(settings, serving=True), FEATURE_SERVICE)

"""The API's view of the online store's health: lookups through a circuit breaker, and whether the
store still holds the snapshot the last materialization wrote (its marker customers).

A Redis restarted empty answers every lookup quickly with "not found": without this, every known
customer would get a 404 "unknown customer" until the next materialization. With it, a lookup that
finds nobody checks the marker customers and, when they are gone too, the API answers 503 naming the
cause (then once a second, while it stays empty); /readyz says not ready for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from propensity.serving.breaker import CircuitBreaker, CircuitOpen
from propensity.serving.feature_source import FeatureRows, FeatureSource, FeatureStoreUnavailable

MARKER_TTL_S = 10.0  # how long the marker file is trusted before it is read again
EMPTY_CHECK_TTL_S = 1.0  # at most one marker lookup a second, however many requests miss


class StoreGuard:
    def __init__(
        self,
        source: FeatureSource,
        *,
        failures: int,
        reset_s: float,
        marker: Callable[[], dict[str, Any] | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source, self.clock, self._read_marker = source, clock, marker
        self.breaker = CircuitBreaker(failures, reset_s, clock)
        self._marker: tuple[float, dict[str, Any] | None] = (-MARKER_TTL_S, None)
        self._empty: tuple[float, str | None] = (-EMPTY_CHECK_TTL_S, None)

    @property
    def feature_names(self) -> list[str]:
        return self.source.feature_names

    def get(self, customer_ids: Sequence[str]) -> FeatureRows:
        """Features through the breaker; a down or broken store is :class:`FeatureStoreUnavailable`."""
        try:
            return self.breaker.call(lambda: self.source.get(customer_ids), FeatureStoreUnavailable)
        except CircuitOpen as exc:
            raise FeatureStoreUnavailable(f"online store unavailable: {exc}") from None

    def check(self) -> None:
        self.breaker.call(self.source.check, FeatureStoreUnavailable)

    def marker(self) -> dict[str, Any] | None:
        at, marker = self._marker
        if self.clock() - at >= MARKER_TTL_S:
            try:
                marker = self._read_marker()
            except Exception:  # an unreadable marker proves nothing either way
                marker = None
            self._marker = (self.clock(), marker)
        return marker

    def empty_reason(self, *, missed: bool = False) -> str | None:
        """Why the store holds none of the current snapshot (None: it does, or nothing says).

        ``missed``: a lookup just found none of its customers. A verdict "empty" is kept for
        EMPTY_CHECK_TTL_S (one marker lookup a second while the store is empty), but a verdict "not
        empty" is not trusted after such a miss: the store may have been emptied since, and a 404
        "unknown customer" for a known customer is a wrong answer. The marker customers are looked
        up again, an extra read only on this cold path.
        """
        at, reason = self._empty
        if self.clock() - at < EMPTY_CHECK_TTL_S and (reason is not None or not missed):
            return reason
        reason = None
        marker = self.marker()
        if marker and marker.get("customers"):
            rows = self.get(marker["customers"])
            if not rows.found.any():
                reason = (
                    f"the online store holds none of the {len(marker['customers'])} reference customers of "
                    f"the {marker['as_of']} snapshot it was loaded with: emptied since (restarted?); re-run "
                    f"the features DAG's materialize_features for {marker['as_of']}"
                )
        self._empty = (self.clock(), reason)
        return reason

"""The API's contract: request and response bodies, exactly as OpenAPI documents them, and how a raw
body becomes the list of canonical customer ids to score.

The request schema is what the API enforces: one customer (``customer_id``) OR a batch
(``customer_ids``), never both (``oneOf``, no other property), ids of at most
``source.max_id_length`` characters written with the characters ids are written with, at most
``serving.max_batch`` ids per batch (more: 413). An id the schema admits can still be refused by
the one id rule (:mod:`propensity.core.ids`: placeholders, signs, exponent forms) with a 422 that
says why; ``"12347.0"`` is customer ``"12347"``, as at ingest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from propensity.core.ids import InvalidCustomerId, canonical_customer_id

# The characters ids are written with (propensity.core.ids, ASCII): as a JSON-schema pattern.
ID_PATTERN = r"^[A-Za-z0-9_.:/@#-]+$"
API_KEY_HEADER = "X-API-Key"


class Prediction(BaseModel):
    customer_id: str
    score: float = Field(ge=0.0, le=1.0, description="probability of a purchase within the label horizon")
    model_name: str
    model_version: str = Field(description="the model version that computed this score")
    feature_timestamp: dt.datetime | None = Field(description="when the customer's features were computed")
    cold_start: bool = Field(default=False, description="unknown customer: scored on empty features")
    fallback: bool = Field(default=False, description="scored in-process: the model server was down")


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    """What every 4xx/5xx answers: a message (or, for 422, the list of what is wrong and where)."""

    detail: str | list[dict[str, Any]]


@dataclass(frozen=True)
class Request:
    """A parsed /predict body: canonical ids, and whether the answer is one Prediction."""

    ids: list[str]
    single: bool


@dataclass(frozen=True)
class Contract:
    """The /predict contract for one app's limits."""

    max_batch: int
    max_id_length: int
    max_body_bytes: int | None = None  # None: body_limit() derives it from the two limits above

    @classmethod
    def from_settings(cls, settings: Any) -> Contract:
        s = settings.serving
        return cls(s.max_batch, settings.source.max_id_length, s.max_body_bytes)

    def body_limit(self) -> int:
        """Bytes a request body may have: twice what ``max_batch`` ids of ``max_id_length``
        characters take as JSON with every character escaped (``\\uXXXX``), so a batch a little
        over the limit still gets the precise 413 on its count; 1 KiB for the rest of the object."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 1024 + 2 * self.max_batch * (6 * self.max_id_length + 4)

    # -- OpenAPI ---------------------------------------------------------------------------
    def id_schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_id_length, "pattern": ID_PATTERN}

    def request_schema(self) -> dict[str, Any]:
        one = {
            "title": "One customer",
            "type": "object",
            "properties": {"customer_id": self.id_schema()},
            "required": ["customer_id"],
            "additionalProperties": False,
        }
        batch = {
            "title": "A batch of customers",
            "type": "object",
            "properties": {
                "customer_ids": {
                    "type": "array",
                    "items": self.id_schema(),
                    "minItems": 1,
                    "maxItems": self.max_batch,
                }
            },
            "required": ["customer_ids"],
            "additionalProperties": False,
        }
        return {"oneOf": [one, batch]}

    def request_body(self) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": self.request_schema()}}}

    # -- parsing ---------------------------------------------------------------------------
    def parse(self, raw: bytes, content_type: str | None) -> Request:
        """The body's canonical ids, or a RequestValidationError shaped as FastAPI's (loc starts with
        "body") naming what is wrong and where. A batch over ``max_batch`` parses: the caller answers
        413 for it."""
        if not raw:
            raise _invalid("missing", ("body",), "Field required")
        if not _is_json(content_type):
            msg = f"expected a JSON object with content-type application/json, got {_short(content_type)}"
            raise _invalid("model_type", ("body",), msg)
        try:
            body = _Body.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"]), "input": None} for e in exc.errors(include_url=False)]
            ) from None
        if (body.customer_id is None) == (body.customer_ids is None):
            raise _invalid("value_error", ("body",), "give exactly one of customer_id or customer_ids")
        single = body.customer_id is not None
        given = [body.customer_id] if single else list(body.customer_ids or [])
        if not given:
            raise _invalid("too_short", ("body", "customer_ids"), "give at least one customer id")
        ids = []
        for i, value in enumerate(given):
            loc = ("body", "customer_id") if single else ("body", "customer_ids", i)
            try:
                ids.append(canonical_customer_id(value, self.max_id_length))
            except InvalidCustomerId as exc:
                raise _invalid("value_error", loc, f"not a customer id: {exc}") from None
        return Request(ids, single)


class _Body(BaseModel):
    """The body's shape (the id rule and the limits are applied after, with their own messages)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: StrictStr | None = None
    customer_ids: list[StrictStr] | None = None


def _invalid(kind: str, loc: tuple[Any, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "none"
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters aside (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))

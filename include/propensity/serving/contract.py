"""The API's contract: request and response bodies, and how a raw body is parsed into a request."""

from __future__ import annotations

import datetime as dt

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator


class PredictRequest(BaseModel):
    """One customer (``customer_id``) or a batch (``customer_ids``), not both."""

    model_config = ConfigDict(extra="forbid")

    customer_id: StrictStr | None = Field(default=None, min_length=1, max_length=64, examples=["17850"])
    customer_ids: list[StrictStr] | None = Field(default=None, min_length=1, examples=[["17850", "13047"]])

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.customer_id is None) == (self.customer_ids is None):
            raise ValueError("give exactly one of customer_id (a string) or customer_ids (a list of strings)")
        return self


class Prediction(BaseModel):
    customer_id: str
    score: float = Field(description="probability of a purchase in the next 30 days")
    model_name: str
    model_version: str
    feature_timestamp: dt.datetime | None = Field(description="when the customer's features were computed")
    cold_start: bool = Field(default=False, description="unknown customer: scored on empty features")
    fallback: bool = Field(default=False, description="scored in-process: the model server was down")


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


# The body /predict documents (it parses it itself, see parse_predict_request).
PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
}


def parse_predict_request(raw: bytes, content_type: str | None) -> PredictRequest:
    """The body as ``PredictRequest``, or a RequestValidationError shaped as FastAPI's (loc starts with "body")."""
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    if not _is_json(content_type):
        msg = f"expected a JSON object with content-type application/json, got {content_type or 'none'}"
        raise RequestValidationError([{"type": "model_type", "loc": ("body",), "msg": msg, "input": None}])
    try:
        return PredictRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters aside (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))

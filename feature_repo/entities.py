"""Entities: who features are about."""

from __future__ import annotations

from feast import Entity
from feast.value_type import ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of the retailer (the source's customer id, as a string).",
)

"""Airflow Assets, defined once and imported by producer and consumer DAGs.

An event on ``validated_events`` carries ``extra={"day": "YYYY-MM-DD"}``: the day whose
partition was published. An event on ``customer_features`` carries
``extra={"as_of": "YYYY-MM-DD"}``: the date of the feature snapshot materialized.
"""

from __future__ import annotations

from airflow.sdk import Asset

validated_events = Asset("propensity://zones/validated/events", group="propensity")
customer_features = Asset("propensity://offline/customer_features", group="propensity")

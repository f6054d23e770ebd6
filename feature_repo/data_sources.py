"""Data sources: the offline store the Spark feature job writes (one Parquet partition per date)."""

from __future__ import annotations

from feast import FileSource

from propensity.features.store import active_settings, offline_source_location

# Local folder or s3:// with the endpoint of MinIO/moto, as the settings profile says.
_location = offline_source_location(active_settings())

customer_features_source = FileSource(
    name="customer_features_source",
    path=_location.path,
    s3_endpoint_override=_location.s3_endpoint_override,
    timestamp_field="event_timestamp",
    description="offline/customer_features/date=D/part-0.parquet: every active customer as of D.",
)

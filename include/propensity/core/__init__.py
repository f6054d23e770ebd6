"""Shared names every stage uses: settings, storage and zone names, schema, time helpers, Spark session,
metrics, alerts, Airflow assets and timetables. Imports nothing above it."""

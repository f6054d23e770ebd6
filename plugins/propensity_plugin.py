"""Airflow plugin: registers what Airflow must load as a plugin (the daily timetable)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from propensity.core.timetables import DailyUtcTimetable


class PropensityPlugin(AirflowPlugin):
    name = "propensity"
    timetables = [DailyUtcTimetable]

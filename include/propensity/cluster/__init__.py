"""The production deployment as native processes: one spec of services, rendered to a supervisord
configuration for this machine and checked against ``docker/compose.yaml`` for real machines."""

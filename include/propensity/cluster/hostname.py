"""``[core] hostname_callable`` of the cluster: each Airflow process reports its service's name.

In compose every container's host name is its service name; natively every process shares one host,
so the service name comes from ``$PROPENSITY_CLUSTER_SERVICE`` (set per process by the spec). A task
instance's ``hostname`` then says which Celery worker ran it, on both deployments."""

from __future__ import annotations

import os
import socket

SERVICE_NAME_ENV = "PROPENSITY_CLUSTER_SERVICE"


def service_hostname() -> str:
    return os.environ.get(SERVICE_NAME_ENV) or socket.getfqdn()

# syntax=docker/dockerfile:1.7
# The pipeline image: every Airflow 3 component (api-server, scheduler, dag-processor, triggerer,
# Celery worker), the Spark master and worker, the MLflow server and the one-shot init.
# Both venvs of the laptop: /opt/venv (Airflow, Spark, Feast, MLflow) and /opt/venv-drift
# (alibi-detect needs numpy<2; the drift DAG runs it with @task.external_python).
#
#   docker build -f docker/airflow.Dockerfile -t propensity-airflow:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    DEBIAN_FRONTEND=noninteractive

# Java 17 for Spark 4; curl for the healthchecks; dumb-init so Celery gets its signals.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl dumb-init procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/propensity

# Dependencies first: they change far less often than the code.
COPY requirements.txt constraints.txt requirements-drift.txt constraints-drift.txt ./
COPY docker/requirements-airflow.txt docker/constraints-airflow.txt docker/
# The Celery provider's kombu caps redis below 6.5: this image takes redis 6.4 (Feast accepts
# it too) in place of the laptop's 7.4; every other pin is the laptop's constraints.txt.
RUN grep -v '^redis==' requirements.txt > /tmp/requirements.txt \
    && grep -v '^redis==' constraints.txt > /tmp/constraints.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip==25.3 \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt -r docker/requirements-airflow.txt \
       -c /tmp/constraints.txt -c docker/constraints-airflow.txt \
    && python -m venv /opt/venv-drift \
    && /opt/venv-drift/bin/pip install --upgrade pip==25.3 \
    && /opt/venv-drift/bin/pip install -r requirements-drift.txt -c constraints-drift.txt

COPY pyproject.toml airflow.cfg ./
COPY include/ include/
COPY config/ config/
COPY dags/ dags/
COPY plugins/ plugins/
COPY feature_repo/ feature_repo/
COPY models/ models/
COPY docker/init_deployment.py docker/
# The cluster policy (schedules end with a replayed export); on PYTHONPATH per the spec.
COPY docker/airflow/airflow_local_settings.py docker/airflow/
# Not editable: the package lives in site-packages, settings find config/ through PROPENSITY_HOME.
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv-drift/bin/pip install --no-deps . \
    && rm -rf build include/*.egg-info

ENV PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/propensity \
    PROPENSITY_HOME=/opt/propensity \
    PROPENSITY_DRIFT_PYTHON=/opt/venv-drift/bin/python \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark

# Non-root; the folders the processes write to are theirs (named volumes inherit this ownership).
RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/propensity propensity \
    && mkdir -p logs/spark-events data/cache /opt/airflow-state \
    && chown -R 50000:0 logs data /opt/airflow-state
USER 50000

ENTRYPOINT ["dumb-init", "--"]
CMD ["airflow", "version"]

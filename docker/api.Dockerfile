# syntax=docker/dockerfile:1.7
# The prediction API: `propensity serve` (uvicorn) on the laptop's pins, no Java, no Airflow
# processes. Stateless: features come from Redis, the model from Triton, the log goes to S3.
#
#   docker build -f docker/api.Dockerfile -t propensity-api:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/propensity

# The same requirements and constraints as the laptop's venv, so the API serves what the tests ran.
COPY requirements.txt constraints.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip==25.3 \
    && /opt/venv/bin/pip install -r requirements.txt -c constraints.txt

COPY pyproject.toml ./
COPY include/ include/
COPY config/ config/
COPY feature_repo/ feature_repo/
COPY models/ models/
RUN /opt/venv/bin/pip install --no-deps . && rm -rf build include/*.egg-info

ENV PATH=/opt/venv/bin:$PATH \
    PROPENSITY_HOME=/opt/propensity

RUN useradd --uid 50001 --gid 0 --no-create-home propensity \
    && mkdir -p data/cache && chown -R 50001:0 data
USER 50001

EXPOSE 8000
CMD ["python", "-m", "propensity.cli", "serve"]

# Two commands matter: `make demo` and `make test`. Both build what they need first.
SHELL := /bin/bash
PYTHON ?= python3.11
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
DRIFT_VENV := $(ROOT)/.venv-drift
PY := $(VENV)/bin/python
PIP_FLAGS := --disable-pip-version-check --no-input -q

export AIRFLOW_HOME := $(ROOT)
export PROPENSITY_HOME := $(ROOT)
export PROPENSITY_DRIFT_PYTHON := $(DRIFT_VENV)/bin/python
# Spark's Python workers must use the venv, not the system python.
export PYSPARK_PYTHON := $(PY)
export PYSPARK_DRIVER_PYTHON := $(PY)
export PATH := $(VENV)/bin:$(PATH)
export GE_USAGE_STATISTICS_ENABLED := False
export GX_ANALYTICS_ENABLED := False
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

.PHONY: help venv venv-drift setup airflow-db demo test test-unit lint airflow serve mlflow clean

help:
	@echo "make demo     set up (venvs, Airflow DB) and run the pipeline on embedded defaults"
	@echo "make test     set up and run every test"
	@echo "make airflow  Airflow UI on :8080 with this repo's DAGs (Ctrl-C stops it)"
	@echo "make serve    prediction API on :8000 (needs a deployed champion: make demo)"
	@echo "make triton   Triton Inference Server on the configured ports (Ctrl-C stops it)"
	@echo "make mlflow   MLflow UI on :5000 over the local tracking store"
	@echo "make lint     ruff"

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip==25.3
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt -c constraints.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(DRIFT_VENV)/.installed: requirements-drift.txt constraints-drift.txt pyproject.toml
	@test -x $(DRIFT_VENV)/bin/python || $(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip==25.3
	$(DRIFT_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-drift.txt -c constraints-drift.txt
	$(DRIFT_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

venv: $(VENV)/.installed
venv-drift: $(DRIFT_VENV)/.installed

airflow-db: venv
	@$(VENV)/bin/airflow db migrate > /dev/null

setup: venv venv-drift airflow-db

demo: setup venv-triton
	$(PY) -m propensity.cli demo

test: setup venv-triton
	$(PY) -m pytest -p no:cacheprovider -m "not cluster" $(PYTEST_ARGS)

# The native cluster end to end (tests/e2e/test_cluster.py): brings the cluster up if it is down.
.PHONY: test-cluster
test-cluster: setup venv-triton
	$(PY) -m pytest -p no:cacheprovider -m cluster $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check include dags plugins tests bench feature_repo backends
	$(VENV)/bin/ruff format --check include dags plugins tests bench feature_repo backends

# Ctrl-C sends SIGINT, which stops standalone's scheduler, api-server and workers together.
# The admin password lives in a file only its owner reads (0600), created before Airflow would
# create it world-readable.
AIRFLOW_PASSWORDS := $(ROOT)/simple_auth_manager_passwords.json.generated
airflow: setup
	@test -f $(AIRFLOW_PASSWORDS) || (umask 077; $(PY) -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(16)}))' > $(AIRFLOW_PASSWORDS))
	@chmod 600 $(AIRFLOW_PASSWORDS)
	@echo "Airflow UI: http://127.0.0.1:8080 (user admin, password in $(AIRFLOW_PASSWORDS))"
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$(AIRFLOW_PASSWORDS) exec $(VENV)/bin/airflow standalone

# API keys come from the environment; the local default key is only for this machine.
serve: setup
	PROPENSITY_API_KEYS=$${PROPENSITY_API_KEYS:-local-dev-key} $(PY) -m propensity.cli serve

mlflow: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(ROOT)/data/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data logs airflow.db simple_auth_manager_passwords.json.generated

# Triton Inference Server (tritonserver 2.51.0 from NVIDIA's PyTriton wheel, CPU, no container):
# its own venv (numpy<2), the Python backend stub copied inside the wheel's tree (elsewhere its
# rpath breaks) and the repo's FIL stand-in backend (backends/fil/model.py) beside it.
TRITON_VENV := $(ROOT)/.venv-triton
TRITON_SERVER_DIR = $(TRITON_VENV)/lib/python3.11/site-packages/pytriton/tritonserver
$(TRITON_VENV)/.installed: requirements-triton.txt constraints-triton.txt backends/fil/model.py
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip==25.3
	$(TRITON_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-triton.txt -c constraints-triton.txt
	install -m 0755 $(TRITON_SERVER_DIR)/python_backend_stubs/3.11/triton_python_backend_stub $(TRITON_SERVER_DIR)/backends/python/
	install -d $(TRITON_SERVER_DIR)/backends/fil
	install -m 0644 backends/fil/model.py $(TRITON_SERVER_DIR)/backends/fil/model.py
	touch $@
.PHONY: venv-triton triton
venv-triton: $(TRITON_VENV)/.installed

# Triton in the foreground on the configured ports, serving the configured repository (Ctrl-C stops it).
triton: setup venv-triton
	$(PY) -m propensity.serving.triton_server

# Every bench/bench_*.py (ours vs a peer, one run each), then one table in bench/RESULTS.md.
# bench_api needs Redis on 127.0.0.1:6379. BENCH_ARGS: e.g. --only api,drift --timeout 600
BENCH_ARGS ?= --timeout 900
.PHONY: bench
bench: setup venv-triton
	$(PY) bench/run_all.py $(BENCH_ARGS)

# The production deployment as native processes under supervisord (config/cluster.yaml; logs,
# secrets and data under data/cluster/). Idempotent: cluster-up starts what is not running.
.PHONY: cluster-up cluster-status cluster-down cluster-demo
cluster-up: setup
	$(PY) -m propensity.cluster up

cluster-status: venv
	$(PY) -m propensity.cluster status

cluster-down: venv
	$(PY) -m propensity.cluster down

cluster-demo: cluster-up
	$(PY) -m propensity.cluster demo

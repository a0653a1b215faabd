# Two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
RAW    := data/raw/rotten_tomatoes_corpus_full.csv.bz2
# No analytics or update checks: the machines running this may have no network.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

# The image demo, in a workspace of its own (tasks/_demo_workspace.py): Fashion-MNIST from Debian's
# dataset-fashion-mnist package, fine-tuned from EfficientNet-Lite0; the text demo's outputs stay as they are.
.PHONY: install data run run-fashion-mnist lint test test-fast ui-mlflow ui-prefect serve serve-model \
	team-up team-down team-status clean

# The link behind pretrain's DVC dependency on the checkpoint (mlcore/models/checkpoint_link.py):
# `dvc status` and `dvc repro` need it in every checkout, so installing makes it.
install: $(STAMP)
	$(BIN)/python -m mlcore.models.checkpoint_link params.yaml

# torch goes first so that the resolver never reaches for a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e ".[dev]"
	touch $@

# params.yaml is checked first: DVC reads it too, and its own failure says little under --quiet,
# so a failing `dvc add` is run again without it to show DVC's message.
data: $(STAMP)
	$(BIN)/python -m mlcore.config --validate params.yaml
	$(BIN)/python -m tasks._workspace
	$(BIN)/python -m mlcore.data.sample $(RAW)
	$(BIN)/python -m mlcore.models.checkpoint_link params.yaml
	$(BIN)/dvc add --quiet $(RAW) || { $(BIN)/dvc add $(RAW); exit 1; }

# After a successful run, the data and every stage output go to the DVC remote (by default
# ../dvc-storage, beside the checkout; see docs/pipeline.md), so another clone can `dvc pull` them.
# A failed push warns: the run and its registered model stand.
run: data
	$(BIN)/python -m flows.training_pipeline
	$(BIN)/dvc push --quiet || echo "warning: dvc push to the DVC remote failed; the run itself succeeded. Check 'dvc remote list' and run 'dvc push' again." >&2

run-fashion-mnist: $(STAMP)
	$(BIN)/python -m tasks._demo_workspace examples/fashion-mnist
	cd workspaces/fashion-mnist && $(CURDIR)/$(BIN)/python -m flows.training_pipeline

# ruff first: a style or import error fails in seconds, before minutes of tests.
lint: $(STAMP)
	$(BIN)/ruff check .

# In parallel processes (pytest-xdist), one per core unless told (make test TEST_WORKERS=1);
# worksteal hands a waiting worker queued tests, so the long ones near the end do not run alone;
# the 15 slowest are listed at the end.
TEST_WORKERS ?= auto
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

# The quick tier, for while you edit: no slow or end-to-end tests (under 2 minutes on 2 cores).
test-fast: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow and not e2e"

# Serves the nightly deployment against the server of `make ui-prefect` (run that first);
# SERVE_ARGS for options, e.g. make serve SERVE_ARGS='--cron "0 */6 * * *" --timeout 7200'.
serve: export PREFECT_API_URL ?= http://127.0.0.1:4200/api
serve: $(STAMP)
	$(BIN)/python -m flows.deploy $(SERVE_ARGS)

# The MLflow store of serve-model and ui-mlflow is the one the pipeline registers in, by the rule
# of mlcore/tracking/store.py (tracking.mlflow_uri, else $MLFLOW_TRACKING_URI, else
# sqlite:///mlflow.db); `python -m mlcore.tracking.store` prints it.
# The registered model's @champion as a REST endpoint (POST /invocations, GET /ping), from that store
# (mlcore/tracking/serving.py: with no champion it says why, exit status 2). Loopback on port 5001
# unless told: make serve-model SERVE_HOST=0.0.0.0 SERVE_PORT=8080.
# The alias is resolved at start: restart after a promotion.
serve-model: $(STAMP)
	@exec $(BIN)/python -m mlcore.tracking.serving $(if $(SERVE_HOST),--host $(SERVE_HOST)) \
		$(if $(SERVE_PORT),--port $(SERVE_PORT))

# A UI over that store (a tracking server is refused: it has its own UI, at its address).
# MLflow 3.17 opens an experiment in its GenAI view unless the link asks for model training:
# open the links printed first (mlcore/tracking/ui.py), which also pick the runs table's saved view.
ui-mlflow: $(STAMP)
	@store="$$($(BIN)/python -m mlcore.tracking.store --backend)" && \
	$(BIN)/python -m mlcore.tracking.ui --base http://127.0.0.1:5000 && \
	exec $(BIN)/mlflow ui --backend-store-uri "$$store" --host 127.0.0.1 --port 5000

# The Prefect server: API, UI and the scheduler that creates the scheduled runs.
ui-prefect: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

# The servers a team shares (docs/team.md): PostgreSQL, an MLflow tracking server and a Prefect
# server on it, detached, with their data in .team/. On loopback unless told: make team-up
# TEAM_HOST=0.0.0.0 (every TEAM_* variable of `python -m team up --help` passes through).
# team-up prints the export lines that point the pipeline at them: eval "$$(make -s team-up)".
team-up: $(STAMP)
	@$(BIN)/python -m team up

# Stops the three; the data stays for the next team-up (`python -m team down --purge` deletes it).
team-down: $(STAMP)
	@$(BIN)/python -m team down

team-status: $(STAMP)
	@$(BIN)/python -m team status

clean:
	rm -rf $(VENV)

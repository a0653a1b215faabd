# Two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
RAW    := data/raw/rotten_tomatoes_corpus_full.csv.bz2
# No analytics or update checks: the machines running this may have no network.
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install data run test test-fast ui-mlflow ui-prefect serve clean

install: $(STAMP)

# torch goes first so that the resolver never reaches for a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e ".[dev]"
	touch $@

data: $(STAMP)
	$(BIN)/python -m mlcore.data.sample $(RAW)
	$(BIN)/dvc add --quiet $(RAW)

run: data
	$(BIN)/python -m flows.training_pipeline

test: $(STAMP)
	$(BIN)/python -m pytest

# The quick tier, for while you edit: no slow or end-to-end tests (under 2 minutes on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e"

serve: $(STAMP)
	$(BIN)/python -m flows.deploy

ui-mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

ui-prefect: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1

clean:
	rm -rf $(VENV)

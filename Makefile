# Two entry points, both self-installing: `make demo` (main job) and `make test` (test suite).
# .python-version pins 3.12; pyenv's shim resolves `python3.12` from it.

PYTHON ?= python3.12
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-packages test check render validate bench clean help

help:
	@echo "make demo   run the whole loop on this machine (train, serve, drift, alert, retrain, propose, promote, roll back)"
	@echo "make test   run the test suite (creates .venv, installs what it needs)"
	@echo "make check  mlops render --check && mlops validate (what CI runs on the tree)"
	@echo "make bench  run the benchmarks in benchmarks/"

# The retrain image pins exact versions (components/retrain/requirements.txt) and a test checks that the
# suite ran with them, so the dev venv takes them as constraints: a fresh install gets the same versions.
CONSTRAINTS := components/retrain/requirements.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
	  || { echo "Python 3.12 is required (see .python-version)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The demo's Debian packages (real Prometheus and Alertmanager; the model server image's Python 3.11),
# installed the way .ci/run installs promtool: only what is missing, only where apt-get can.
DEMO_PACKAGES := prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager python3.11:python3.11,python3.11-venv

demo-packages:
	@missing=""; for pair in $(DEMO_PACKAGES); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $$(echo $${pair#*:} | tr , ' ')"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "make demo needs:$$missing (Debian packages: install them, then run make demo again)"; exit 1; fi; \
	fi

demo: $(STAMP) demo-packages
	$(BIN)/python -m demo run

test: $(STAMP)
	$(BIN)/ruff check generator tests benchmarks components demo
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/mlops render --check
	$(BIN)/mlops validate

bench: $(STAMP)
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

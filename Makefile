# The two commands a newcomer needs: `make test` and `make demo`. Each creates .venv with
# Python 3.11 when it is missing and installs the pinned dependencies; the stamp file makes a
# second run install nothing unless a requirements file or setup.py changed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip --disable-pip-version-check --quiet
# Arguments for pytest, e.g. `make test PYTEST_ARGS="-k metrics"`.
PYTEST_ARGS ?=

.PHONY: venv test demo lint bench clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py setup.cfg
	$(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	@echo "the end-to-end demo arrives with the synthetic world and the default model" && false

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_realtime.py

clean:
	rm -rf demo_out build *.egg-info .pytest_cache

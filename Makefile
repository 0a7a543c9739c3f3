# covid_tf: `make demo` and `make test` set everything up on a fresh machine (Python 3.11).
PYTHON_SYSTEM ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
PIP_FLAGS := --quiet --disable-pip-version-check
export TF_CPP_MIN_LOG_LEVEL := 3
export MPLBACKEND := Agg
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: help install demo test test-fast lint bench clean notebooks lab

help:
	@echo "make demo   - install, generate synthetic data, run every notebook, write reports/"
	@echo "make test   - install, run the unit tests and every notebook with smoke parameters"
	@echo "make lint   - ruff"
	@echo "make bench  - run the benchmarks and rewrite BENCHMARKS.md"
	@echo "make lab    - install, then open the notebooks in JupyterLab (kernel covid_tf)"
	@echo "make notebooks - regenerate notebooks/*.ipynb from notebooks/src/*.py (jupytext)"

# The packages come through uv (same versions as pip, from the same constraints; 23 s instead of about 2 min on
# a fresh machine: BENCHMARKS.md). Where uv cannot be installed or fails, pip does the same work.
# --compile-bytecode: pip writes every package's .pyc at install, uv only when asked. Without them, where
# PYTHONDONTWRITEBYTECODE is set (as on the machines this project is built and tested on), every process compiles
# TensorFlow again: 13.6 s per import instead of 5.4 s, in each test worker, notebook kernel and child command.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON_SYSTEM) -m venv $(VENV)
	if $(PYTHON) -m pip install $(PIP_FLAGS) -c constraints.txt uv && \
	   $(UV) pip install --quiet --compile-bytecode --python $(PYTHON) -c constraints.txt -r requirements-dev.txt && \
	   $(UV) pip install --quiet --python $(PYTHON) --no-deps -e . ; then \
	  true; \
	else \
	  echo "uv failed: installing with pip"; \
	  $(PYTHON) -m pip install $(PIP_FLAGS) -c constraints.txt -r requirements-dev.txt && \
	  $(PYTHON) -m pip install $(PIP_FLAGS) --no-deps -e . ; \
	fi
	$(PYTHON) -m pip check
	$(PYTHON) -m ipykernel install --sys-prefix --name covid_tf --display-name "covid_tf"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m covid_tf.notebook_runner --profile demo

test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --durations=25

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not notebook and not slow"

lint: $(STAMP)
	$(PYTHON) -m ruff check .

bench: $(STAMP)
	$(PYTHON) benchmarks/run_all.py

notebooks: $(STAMP)
	$(PYTHON) tools/notebooks.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf reports/figures reports/notebooks .cache .pytest_cache

# The interpreter .venv is made with; CI runs the full suite on python3 = 3.11 (make test PYTHON=python3.12 to choose).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test smoke-wheel bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mjx-biomech demo --quick --out demo_output

# Three processes: one process for the whole suite grew until XLA aborted (compile/cache) around
# tests/test_scale.py; every test still runs.
test: $(STAMP)
	$(PY) -m pytest -q tests/test_[a-e]*.py
	$(PY) -m pytest -q tests/test_[f-m]*.py
	$(PY) -m pytest -q tests/test_[n-z]*.py

# the built wheel, installed with [all] in a fresh virtualenv on the newest Python 3.11-3.13 here
smoke-wheel:
	bash .ci/smoke_wheel.sh

bench: $(STAMP)
	$(PY) benchmarks/fk.py
	$(PY) benchmarks/convert.py
	$(PY) benchmarks/fit.py
	$(PY) benchmarks/env.py
	$(PY) benchmarks/ik.py
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) demo_output

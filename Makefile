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

# One pytest process per test file: with jax 0.9.2 on CPU a process that has compiled a few hundred
# programs has segfaulted or aborted inside XLA's compiler (a third of the suite in one process was
# enough; each file passes alone). Every file runs; the target fails if any file failed.
test: $(STAMP)
	@status=0; for f in tests/test_*.py; do \
		echo "== $$f"; $(PY) -m pytest -q $$f || status=1; \
	done; exit $$status

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

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mjx-biomech demo --quick --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/fk.py
	$(PY) benchmarks/convert.py
	$(PY) benchmarks/fit.py
	$(PY) benchmarks/env.py
	$(PY) benchmarks/ik.py
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(VENV) demo_output

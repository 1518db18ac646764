# One-command set-up: `make demo` (train on ml-100k) and `make test` (the whole suite, both backends).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast typecheck lint docs course bench gallery clean

# The demo needs cfcore and JAX only; the suite every backend and the development tools.
DEMO_STAMP := $(VENV)/.installed-demo

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[jax]"
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A CPU-only torch from the machine's local wheels when there is one (about 190 MB instead of
	# the 2.8 GB of CUDA wheels that Linux torch pulls from PyPI); '-': go on without it.
	-$(PY) -m pip install --quiet --no-index --no-deps torch
	$(PY) -m pip install --quiet -e ".[all,dev,docs,tune]"
	touch $(STAMP) $(DEMO_STAMP)

setup: $(STAMP)

# Trains the notebook's regularized model on ml-100k (downloaded once, or read from CFCORE_DATA_DIR).
demo: $(DEMO_STAMP)
	$(VENV)/bin/cfcore train --model regularized --dataset 100k --out runs/demo

# The static type check, the documentation site, then the suite (which runs the docstring examples
# too, test_docstrings, and the course notebook, test_course_notebook).
test: $(STAMP) typecheck docs
	$(PY) -m pytest

# The quick tier: no slow runs, no test that starts processes, runs benchmarks or opens a browser.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not subprocess and not benchmark and not browser"

# pyright over cfcore/ and backends/ in standard mode ([tool.pyright] in pyproject.toml).
typecheck: $(STAMP)
	$(VENV)/bin/pyright --pythonpath $(PY)

# The documentation site (mkdocs.yml): strict, so a broken link, anchor or API reference fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# Re-executes the course notebook and saves it with its outputs (what the site shows).
course: $(STAMP)
	$(PY) docs/tutorials/execute.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[all,dev,bench]"
	$(PY) benchmarks/overhead.py

# The user guide's gallery: runs the documented commands and keeps small copies of their PNGs.
gallery: $(STAMP)
	$(PY) docs/gallery/make_gallery.py

clean:
	rm -rf $(VENV) runs .pytest_cache

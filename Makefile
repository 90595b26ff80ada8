# The two quickstart commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --editable '.[dev,spark]'
	touch $(STAMP)

venv: $(STAMP)

# Generates a synthetic register, loads and validates it, publishes a release, computes the
# indicators and serves the API on http://127.0.0.1:8000 (KVARUS_DEMO=1 allows the public demo key).
demo: $(STAMP)
	KVARUS_DEMO=1 $(VENV)/bin/kvarus demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# The two quick-start commands: `make demo` and `make test`.
# Each sets up everything it needs in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint types unit docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Builds the demo platform on first run (a simulated month), then serves the API on
# http://127.0.0.1:8000 until Ctrl-C; a rerun reuses it. E.g. make demo DEMO_ARGS="--reset --port 8001"
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/micropay demo --database-url sqlite:///micropay-demo.db $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report

test: lint types unit

docs: $(STAMP)
	$(BIN)/micropay docs

clean:
	rm -rf $(VENV) micropay-demo.db*

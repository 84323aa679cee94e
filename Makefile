# Both targets build their own virtual environment, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test lint venv clean constraints

# constraints.txt pins every version (reproducible installs); pyproject.toml keeps the ranges.
$(BIN)/recs: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $@

venv: $(BIN)/recs

demo: venv
	$(BIN)/python -m recs.demo

test: venv
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

# Re-pin constraints.txt after changing a dependency in pyproject.toml (see .ci/pin).
constraints:
	PYTHON=$(PYTHON) .ci/pin

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -e '.[test]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -c "import crmkit, voila, msal, playwright" # fail here, not later, if the install broke
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/crmkit demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check crmkit tests bench

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) test-output .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check
# Exact versions of every dependency (incl. the test extra), made by `make lock` from pyproject.toml's ranges.
LOCK := requirements.lock
# pipefail: a failing pip fails the recipe even though its output goes through the filter below.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Some machines' pip configuration names package folders that do not exist; pip warns once per package.
QUIET_MISSING := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo hub test lint bench clean lock

# Installs the lock, then crmkit itself without resolving again: a fresh machine gets the versions
# tested here, not the newest of everything.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -r $(LOCK) 2>&1 | $(QUIET_MISSING)
	$(PY) -m pip install $(PIP_QUIET) --no-deps -e . 2>&1 | $(QUIET_MISSING)
	$(PY) -c "import crmkit, voila, msal, playwright" # fail here, not later, if the install broke
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/crmkit demo

# JupyterHub for a team (as root): sign-in at the sandbox tenant by default, a server per person as their OS user,
# over the team's CRM on PostgreSQL named by CRMKIT_DB (README: "Run crmkit for a team").
hub: setup
	$(VENV)/bin/crmkit hub $(if $(CRMKIT_DB),--db "$(CRMKIT_DB)")

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check crmkit tests bench

bench: setup
	$(PY) -m bench

# Refresh the lock: install pyproject.toml's ranges (dependencies and [test]; crmkit itself is not
# built) into a fresh temporary venv and freeze it. Takes a few minutes; commit the result.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  print(*p['dependencies'], *p['optional-dependencies']['test'], sep='\n')" > "$$tmp/ranges.txt"; \
	"$$tmp/venv/bin/pip" install $(PIP_QUIET) -r "$$tmp/ranges.txt"; \
	{ echo "# Exact versions for Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')"\
	    "on $$(uname -s), made by 'make lock' from pyproject.toml (with [test]). Do not edit by hand."; \
	  "$$tmp/venv/bin/pip" freeze --disable-pip-version-check; } > "$$tmp/lock"; \
	mv "$$tmp/lock" $(LOCK)

clean:
	rm -rf $(VENV) test-output .pytest_cache

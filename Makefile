# provisiond: the two commands a new user needs are `make lab` and `make test`.
# Each one installs what it needs (Debian packages, a virtualenv, the project) first.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test test-openstack lab lab-ready lab-down lab-smoke screenshot deps venv lint clean

test: deps
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

# The real OpenStack controller in a Debian 12 container (about 15 minutes; docs/openstack.md).
test-openstack: deps
	$(BIN)/pytest -m openstack -s tests/openstack $(PYTEST_ARGS)

lab: deps
	$(BIN)/provisiond lab $(LAB_ARGS)

# The whole rack to `ready` and removed after its report; exit status 0 only if every node got
# there (about 35-60 min on 2 shared cores under TCG; not in `make test`; docs/lab.md).
lab-ready: deps
	$(BIN)/provisiond lab --down-after $(LAB_ARGS)

# Stops the lab of LAB_WORKDIR (or the only one running); LAB_DOWN_ARGS=--all for every lab.
lab-down: deps
	$(BIN)/provisiond lab down $(if $(LAB_WORKDIR),--workdir $(LAB_WORKDIR)) $(LAB_DOWN_ARGS)

# One BIOS and one UEFI VM, powered on over IPMI, PXE-boot to their installer (a few minutes;
# also part of `make test`).
lab-smoke: deps
	$(BIN)/pytest tests/lab/test_lab_smoke.py $(PYTEST_ARGS)

# docs/status-page.png: the live status page in headless Chromium, taken by its test (root:
# the server runs in a network namespace; about a minute).
screenshot: deps
	PROVISIOND_SCREENSHOT=$(CURDIR)/docs/status-page.png \
		$(BIN)/pytest tests/web/test_web_serve.py -k chromium $(PYTEST_ARGS)

# Debian packages (one list per concern in deps/apt/), then the virtualenv.
deps: $(STAMP)

$(STAMP): pyproject.toml hatch_build.py provisiond/tftp/sender.c $(wildcard deps/apt/*.txt) \
          scripts/install-deps.sh
	scripts/install-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: deps

lint: deps
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

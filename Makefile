# imagestore: `make run` serves on :3333, `make test` runs the whole suite.
# Both install what they need: Debian packages when missing, then a virtualenv.

SHELL := /bin/sh
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

.PHONY: help run test lint system-deps test-system-deps clean

help:
	@echo "make run    serve on :3333 with ./image-db (installs what it needs)"
	@echo "make test   lint and run the whole test suite (installs what it needs)"
	@echo "make lint   ruff only"
	@echo "make clean  remove the virtualenv and caches"

run: $(RUNTIME)
	$(PY) imagestore.py

test: $(DEV) test-system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

system-deps:
	scripts/ensure-debian-packages python3=python3 py:ensurepip=python3-venv

# The tests start their own private brokers, and load the Swagger page in Debian's Chromium.
test-system-deps:
	scripts/ensure-debian-packages mosquitto=mosquitto mosquitto_passwd=mosquitto chromium=chromium

$(PY):
	$(MAKE) system-deps
	python3 -m venv $(VENV)

$(RUNTIME): requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

$(DEV): requirements-dev.txt requirements.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	touch $@ $(RUNTIME)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

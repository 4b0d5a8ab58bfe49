# imagestore: `make` builds the one executable dist/imagestore, `make run` serves on
# :3333 from source, `make test` runs the whole suite (against the executable too).
# All install what they need: Debian packages when missing, then a virtualenv.

SHELL := /bin/sh
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
BUILD := $(VENV)/.build-installed
BENCH := $(VENV)/.bench-installed
EXE := dist/imagestore
# What the executable is made of: a change to any of these rebuilds it.
EXE_SOURCES := build.spec $(wildcard *.py handlers/*.py store/*.py notify/*.py cli/*.py) \
	$(shell find static -type f)
# PyInstaller needs the shared libpython of the Python it runs on (Debian's python3
# ships it apart, in libpythonX.Y); evaluated only once the virtualenv exists.
LIBPYTHON = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))')
PYTHON_VERSION = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

.DEFAULT_GOAL := build

.PHONY: help build run test check lint bench bench-cluster docker system-deps test-system-deps build-system-deps \
	bench-system-deps clean

help:
	@echo "make        build dist/imagestore, the one executable (installs what it needs)"
	@echo "make run    serve on :3333 with ./image-db (installs what it needs)"
	@echo "make test   lint and run the whole test suite (installs what it needs)"
	@echo "make check  lint and the suite without the executable and the browser (quick)"
	@echo "make lint   ruff and mypy"
	@echo "make bench  throughput, latency, memory and start-up against dd and nginx (bench/run.py)"
	@echo "make bench-cluster  PostgreSQL + S3, 1-3 instances behind nginx, vs boto3 (bench/cluster.py)"
	@echo "make clean  remove the virtualenv and caches"

build: $(EXE)

$(EXE): $(EXE_SOURCES) $(BUILD) | build-system-deps
	$(PY) -m PyInstaller --noconfirm --clean --log-level WARN build.spec
	@ls -l $(EXE)

run: $(RUNTIME)
	$(PY) imagestore.py

# The suite includes a smoke test of dist/imagestore (tests/test_executable.py).
test: lint test-system-deps $(EXE)
	$(PY) -m pytest

# The quick loop: everything but the executable's smoke test and the browser.
check: lint test-system-deps
	$(PY) -m pytest -m "not exe and not browser"

lint: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

system-deps:
	scripts/ensure-debian-packages python3=python3 py:ensurepip=python3-venv

# The tests start their own private brokers and PostgreSQL clusters (Debian's server
# programs, never a server the machine may run), an nginx in front of several instances,
# and load the Swagger page in Debian's Chromium.
test-system-deps:
	scripts/ensure-debian-packages mosquitto=mosquitto mosquitto_passwd=mosquitto \
		chromium=chromium openssl=openssl 'glob:/usr/lib/postgresql/*/bin/initdb=postgresql' \
		psql=postgresql-client nginx=nginx

# binutils: objcopy appends the bundle to PyInstaller's bootloader, strip slims libraries.
build-system-deps: | $(PY)
	scripts/ensure-debian-packages objcopy=binutils so:$(LIBPYTHON)=libpython$(PYTHON_VERSION)

# Figures to read, not tests: bench/run.py measures the service from source against
# nginx and dd (and dist/imagestore's cold start when it is built) and prints a table,
# kept in bench/results/ (git-ignored). Options: make bench BENCH_ARGS="--compare HEAD~5".
bench: $(BENCH) bench-system-deps
	$(PY) bench/run.py $(BENCH_ARGS)

# Scale-out: PostgreSQL + S3 with 1, 2, 3 instances behind nginx vs one host vs boto3.
bench-cluster: $(BENCH) bench-system-deps test-system-deps $(EXE)
	$(PY) bench/cluster.py $(BENCH_ARGS)

# The baselines (nginx with its WebDAV module, for PUT), wrk, and a private broker.
bench-system-deps:
	scripts/ensure-debian-packages wrk=wrk nginx=nginx mosquitto=mosquitto

# The Docker image (needs a Docker engine): the same `make build` in its builder stage.
docker:
	docker build -t imagestore .

$(PY):
	$(MAKE) system-deps
	python3 -m venv $(VENV)

$(RUNTIME): requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

$(BUILD): requirements-build.txt requirements.txt | $(PY)
	$(PIP) install -r requirements-build.txt
	touch $@ $(RUNTIME)

$(DEV): requirements-dev.txt requirements.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	touch $@ $(RUNTIME)

$(BENCH): requirements-bench.txt requirements.txt requirements-thumbor.txt | $(PY)
	$(PIP) install -r requirements-bench.txt
	$(PY) -m venv .venv-thumbor
	.venv-thumbor/bin/python -m pip --disable-pip-version-check -q install -r requirements-thumbor.txt
	touch $@ $(RUNTIME)

clean:
	rm -rf $(VENV) .venv-thumbor .pytest_cache .ruff_cache .hypothesis build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

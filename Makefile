# Everyday commands for executor-exporter.
#
# Newcomers need only python3 (3.10+) and make:
#     make demo      # create .venv, install, run the demo
#     make test      # create .venv, install, run the tests with branch coverage
#
# Everything runs inside a virtualenv ($(VENV)) made from $(PYTHON); both can be
# overridden, e.g. `make test PYTHON=python3.12 VENV=.cache/venvs/py3.12 COV_MIN=0`
# (an existing venv is reused as it is: `make distclean` to start over).

PYTHON ?= python3
VENV ?= .venv
COV_MIN ?= 96
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
CONFORMANCE_ARGS ?= --all
# Extra requirements installed together with '.[dev]', e.g. PIP_EXTRA='prometheus-client==0.20.0'
# (quote a specifier with < or > once more: PIP_EXTRA="'hypothesis<6.150'").
PIP_EXTRA ?=
# The extras installed with the package: dev = test + engines + ruff and mypy.  The
# free-threaded build takes EXTRAS=test,engines (mypy's compiled parts need Rust there).
EXTRAS ?= dev

VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
# Only the folders that exist (an empty folder is not in a git clone).
LINT_PATHS := $(wildcard src tests benchmarks scripts examples .ci)

PYTEST_COV := --cov=executor_exporter --cov-branch --cov-report=term-missing \
	--cov-fail-under=$(COV_MIN)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format typecheck bench instructions scrape-cost \
	conformance \
	conformance-compare test-sid conformance-sid test-ft \
	docs docs-check clean distclean

help: ## show this help
	@echo "usage: make TARGET [PYTHON=python3] [VENV=.venv] [COV_MIN=96] [PYTEST_ARGS=...]"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

# --- environment ---------------------------------------------------------------------

$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else \
		"executor-exporter needs Python 3.10+, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Re-installs whenever pyproject.toml changes; otherwise a no-op.
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --disable-pip-version-check -e '.[$(EXTRAS)]' $(PIP_EXTRA)
	@touch $@

install: $(STAMP) ## create the venv (.venv) and install the package with its dev tools (idempotent)

# The demo needs the package alone (and prometheus-client), not the test and dev tools.
$(DEMO_STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --disable-pip-version-check -e . $(PIP_EXTRA)
	@touch $@

# --- running -------------------------------------------------------------------------

demo: $(DEMO_STAMP) ## run the demo until Ctrl-C (DEMO_ARGS='--duration 60 --port 9464' ...)
	$(VENV_PY) -m executor_exporter demo $(DEMO_ARGS)

bench: install ## run the overhead benchmark (BENCH_ARGS=--quick for a smoke run)
	$(VENV_PY) benchmarks/bench.py $(BENCH_ARGS)

instructions: install ## count instructions per task against the stdlib (needs valgrind)
	$(VENV_PY) benchmarks/instructions.py $(BENCH_ARGS)

SCRAPE_JSON ?= benchmarks/results/scrape-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])').json

scrape-cost: install ## scrape cost vs executors and tasks run, plotted to docs/scrape-cost.png (needs matplotlib)
	$(VENV_PY) benchmarks/scrape.py --json $(SCRAPE_JSON) $(BENCH_ARGS)
	$(VENV_PY) scripts/plot_scrape.py $(SCRAPE_JSON)

conformance: install ## run the conformance checks (scripts/conformance.py)
	$(VENV_PY) scripts/conformance.py $(CONFORMANCE_ARGS)

conformance-compare: install ## the conformance run with the stdlib classes' run beside it
	$(VENV_PY) scripts/conformance.py --all --compare

# --- Python 3.14, 3.15 (as root; CI runs them too) and free-threaded (not in CI yet) ---
# The chroot has no /dev/pts (the host's /dev is never mounted there): top's terminal
# tests run on the host's Pythons only.
SID_PYTHONS := 3.14 3.15

test-sid: ## the suite on Debian sid's Python 3.14 and 3.15, in a chroot (scripts/chroot.sh)
	bash scripts/chroot.sh build
	for v in $(SID_PYTHONS); do \
		bash scripts/chroot.sh run make test PYTHON=python$$v VENV=/root/venvs/py$$v COV_MIN=0 \
			PYTEST_ARGS="-m 'not slow and not terminal'" || exit 1; \
	done

conformance-sid: ## CPython's own suites of 3.14 and 3.15 on our classes, in the chroot
	bash scripts/chroot.sh build
	for v in $(SID_PYTHONS); do \
		bash scripts/chroot.sh run make conformance PYTHON=python$$v VENV=/root/venvs/py$$v \
			CONFORMANCE_ARGS="$(CONFORMANCE_ARGS)" || exit 1; \
	done

FT_PY := .cache/py313t/bin/python3.13t

test-ft: ## the whole suite on a free-threaded 3.13 built from source, PYTHON_GIL=0
	bash scripts/freethreaded.sh
	PYTHON_GIL=0 $(MAKE) test PYTHON=$(FT_PY) VENV=.cache/venvs/py3.13t COV_MIN=0 \
		EXTRAS=test,engines PIP_EXTRA="'hypothesis<6.150'"

# --- checks --------------------------------------------------------------------------

# pytest exits 5 when it collected no test (e.g. an -m/-k filter matched nothing);
# that is reported loudly but is not an error.
# Coverage data of each process goes to .coverage.<host>.<pid>.<n> (parallel = true);
# pytest-cov combines and deletes them.  One left by a worker killed while writing it is
# not a data file: removed before and after a run, so no run reads another's.
define run_pytest
	@echo "$(VENV_PY) -m pytest $(PYTEST_COV) $(1) $(PYTEST_ARGS)"
	@rm -f .coverage.*
	@rc=0; $(VENV_PY) -m pytest $(PYTEST_COV) $(1) $(PYTEST_ARGS) || rc=$$?; \
	rm -f .coverage.*; \
	if [ $$rc -eq 5 ]; then \
		echo "WARNING: pytest collected no tests (exit code 5); treated as success."; \
		exit 0; \
	fi; \
	exit $$rc
endef

test: install ## run all tests with branch coverage (COV_MIN=96, PYTEST_ARGS=...)
	$(call run_pytest,)

test-fast: install ## run the tests not marked slow
	$(call run_pytest,-m 'not slow')

lint: install ## ruff check + ruff format --check
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

typecheck: install ## mypy --strict (configured in pyproject.toml), as 3.10 and as 3.14
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --python-version 3.14 --strict --config-file= src/executor_exporter

docs: install ## rewrite the README metric table from `python -m executor_exporter table`
	$(VENV_PY) scripts/update_readme_table.py

docs-check: install ## fail if the README metric table is out of date
	$(VENV_PY) scripts/update_readme_table.py --check

# --- cleaning ------------------------------------------------------------------------

clean: ## remove caches, coverage data and build output (keeps the venvs)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis htmlcov \
		.coverage .coverage.* coverage.xml
	find $(LINT_PATHS) -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf src/*.egg-info

distclean: clean ## clean, and remove the venv (.venv) and the CI venvs under .cache/
	rm -rf $(VENV) .cache/venvs

"""Shared fixtures (a fresh registry per test, a gate that blocks worker threads) and
the guards that keep a hanging test from hanging the run.

Each test has a time limit (pytest-timeout, ``timeout`` in pyproject.toml; the ``slow``
stress runs get ``SLOW_TEST_TIMEOUT``): past it, every thread's stack is printed and
that test fails, the others go on.  A limit per test cannot see a hang after the last
one (a pool's worker that never exits, joined at interpreter exit), so once the run is
over, ``exit_timeout`` seconds are left for the process to end; then faulthandler
prints every thread's stack and ends it with status 1.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from typing import IO

import pytest
from prometheus_client import CollectorRegistry

from helpers import Gate

#: The per-test limit of the tests marked ``slow`` (the 1M-task and memory runs take
#: 30-90 s alone; coverage, free-threaded builds and a loaded machine multiply that).
SLOW_TEST_TIMEOUT = 900.0

# Kept open until the process ends: faulthandler writes to it from its own thread.
_exit_watchdog_file: IO[str] | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "exit_timeout",
        "seconds the process may take to exit after the last test; then every thread's "
        "stack is printed and the process ends with status 1 (0: wait forever)",
        default="120",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    global _exit_watchdog_file
    seconds = float(config.getini("exit_timeout"))
    if seconds > 0:
        # A descriptor of our own: pytest closes or redirects the ones it used.
        _exit_watchdog_file = os.fdopen(os.dup(2), "w")
        faulthandler.dump_traceback_later(seconds, exit=True, file=_exit_watchdog_file)


def pytest_report_header() -> str:
    """Say whether this run has the GIL (a free-threaded build with PYTHON_GIL=0 has not)."""
    check = getattr(sys, "_is_gil_enabled", None)
    gil = "on" if check is None or check() else "OFF (free-threaded)"
    return f"executor-exporter: GIL {gil}"


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own: the global REGISTRY is never touched."""
    return CollectorRegistry()


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A gate that tasks block on; opened at teardown so no worker stays stuck."""
    g = Gate()
    yield g
    g.open()

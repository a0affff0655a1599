"""Shared fixtures: a fresh registry per test and a gate that blocks worker threads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from helpers import Gate


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

"""Module-level task functions for the stress tests (process pools pickle them)."""

from __future__ import annotations

import os
import signal
import time

from proc_tasks import wait_for_file  # noqa: F401  (one copy, used through this module)

# The map item of test_process_pool_load_with_killed_worker that kills its worker.
KILL_AT = 5_010


def noop() -> None:
    return None


def tiny(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def boom(x: int) -> int:
    raise ValueError(f"task {x} fails on purpose")


def map_item(x: int) -> int:
    """A ``map`` item: kills its own worker process at the marker, some raise.

    The items after the marker take 0.2 ms each (10 ms a chunk), so that the surviving
    worker is still busy with its queued chunks while the pool breaks, as real tasks are.
    """
    if x == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    if x > KILL_AT:
        time.sleep(0.0002)
    if x % 100 == 37:
        raise ValueError(f"map item {x} fails on purpose")
    return x


def plain_item(x: int) -> int:
    """A plainly submitted item: one in ten raises."""
    if x % 10 == 3:
        raise ValueError(f"item {x} fails on purpose")
    return x


def raise_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"item {x} fails on purpose")
    return x

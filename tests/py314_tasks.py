"""Module-level tasks for the 3.14 tests (map buffersize, terminate/kill_workers).

They must pickle under spawn and forkserver, so they live here, not in the test modules.
"""

from __future__ import annotations

import os
import time

RELEASE = "release"


def started_path(folder: str, x: int) -> str:
    """The file ``mark_then_wait`` creates when item ``x`` starts."""
    return os.path.join(folder, f"started-{x}")


def started_items(folder: str) -> set[int]:
    """The items whose ``mark_then_wait`` call started."""
    return {int(name[8:]) for name in os.listdir(folder) if name.startswith("started-")}


def release(folder: str) -> None:
    """Let every blocked ``mark_then_wait`` call of ``folder`` return."""
    open(os.path.join(folder, RELEASE), "a").close()


def mark_then_wait(x: int, folder: str, block_from: int = 0, timeout: float = 30.0) -> int:
    """Record that item ``x`` started; from item ``block_from`` on, block until
    :func:`release` was called for ``folder``.  Returns ``x * x``."""
    open(started_path(folder, x), "x").close()
    if x >= block_from:
        gate = os.path.join(folder, RELEASE)
        deadline = time.monotonic() + timeout
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(gate)
            time.sleep(0.005)
    return x * x

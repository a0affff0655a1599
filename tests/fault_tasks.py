"""Module-level task functions for the process-pool fault tests.

They must pickle by reference and import in ``spawn`` and ``forkserver`` children, so
they live here, imported as the top-level module ``fault_tasks``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from proc_tasks import wait_for_file  # noqa: F401  (one copy, used through this module)


def square(x: int) -> int:
    return x * x


def getpid(_: Any = None) -> int:
    return os.getpid()


def kill_self(_: Any = None) -> None:
    """Die at once, as an OOM kill would: no cleanup, no result."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # pragma: no cover - the signal is delivered first


def kill_self_soon(_: Any = None) -> None:
    """Die after a moment: the calls submitted right behind it are queued by then."""
    time.sleep(0.2)
    kill_self()


def kill_self_at(x: int, bad: int = 13) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover
    time.sleep(0.002)
    return x


def keyboard_interrupt(x: Any) -> None:
    raise KeyboardInterrupt(x)


def system_exit(code: Any) -> None:
    raise SystemExit(code)


def system_exit_at(x: int, bad: int = 4) -> int:
    if x == bad:
        raise SystemExit(x)
    return x


def unpicklable_result(_: Any = None) -> Any:
    return threading.Lock()


def init_fail(delay: float = 0.0) -> None:
    """Fail the initializer; after ``delay`` seconds, so that the parent can submit a
    few tasks before the pool breaks."""
    time.sleep(delay)
    raise RuntimeError("initializer failed on purpose")


def init_record(path: str) -> None:
    """Leave one file per worker process that ran its initializer."""
    with open(os.path.join(path, str(os.getpid())), "w") as f:
        f.write("ok")


class NeedsTwoArgs(Exception):
    """Pickles in the child, but does not unpickle in the parent (args has one item)."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(a)
        self.b = b


def raise_needs_two_args(_: Any = None) -> None:
    raise NeedsTwoArgs("half", "lost")


class HoldsALock(Exception):
    """An exception that cannot be pickled in the child."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_holds_a_lock(_: Any = None) -> None:
    raise HoldsALock("with a lock")

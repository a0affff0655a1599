"""Module-level task functions for process-pool tests (they must pickle under spawn)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

_initialized: list[Any] = []


# A clock only the tasks move (see test_values_land_in_their_buckets): the recorded
# waits and durations are then exact, however busy the machine is.  A forked worker
# starts from a copy of the parent's reading.
fake_now = 0.0


def fake_clock() -> float:
    return fake_now


def advance_clock(seconds: float) -> float:
    global fake_now
    fake_now += seconds
    return seconds


def square(x: int) -> int:
    return x * x


def new_set(x: Any) -> set[Any]:
    """A result the parent can hold a weak reference to."""
    return {x}


def add(x: int, y: int, *, z: int = 0) -> int:
    return x + y + z


def echo_kwargs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def raise_at(x: int, bad: int = 7) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")  # the line the remote traceback must show
    return x


def raise_base(x: int) -> int:
    raise KeyboardInterrupt(x)


def sleep_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_for_file(path: str, timeout: float = 30.0) -> str:
    """Block until ``path`` exists: lets a test hold workers busy, then release them."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return path


def touch_then_wait(started: str, release: str) -> str:
    """Create ``started``, then block until ``release`` exists: marks when a call began."""
    open(started, "x").close()
    return wait_for_file(release)


def kill_self_at(x: int, bad: int = 13) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.002)
    return x


def exit_now(code: int = 3) -> None:
    os._exit(code)


def getpid(_: Any = None) -> int:
    return os.getpid()


def unpicklable_result(_: Any = None) -> Any:
    return threading.Lock()


def init_record(path: str) -> None:
    with open(os.path.join(path, str(os.getpid())), "w") as f:
        f.write("ok")


def init_fail() -> None:
    raise RuntimeError("initializer failed on purpose")


def squares_in_nested_pools(x: int) -> tuple[int, int, int]:
    """Run square(x) in a stdlib pool and in one of ours, from inside a worker of ours
    (whose call items unpickle as our _CallItem; the nested pools' must not change)."""
    import concurrent.futures as cf

    from prometheus_client import CollectorRegistry

    from executor_exporter import ProcessPoolExecutor

    with (
        cf.ProcessPoolExecutor(1) as std,
        ProcessPoolExecutor(1, registry=CollectorRegistry()) as ours,
    ):
        a, b = std.submit(square, x).result(), ours.submit(square, x).result()
    return a, b, ours.stats().completed


def call_item_class() -> str:
    """Which ``_CallItem`` this worker unpickles call items with (module.qualname)."""
    import concurrent.futures.process as process

    cls = process._CallItem
    return f"{cls.__module__}.{cls.__qualname__}"

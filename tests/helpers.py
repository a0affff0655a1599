"""Helpers shared by the test modules: invariants, sample reading, blocking tasks."""

from __future__ import annotations

import importlib
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

import executor_exporter
from executor_exporter import ExecutorStats, HistogramStats

THREAD_TYPE = "concurrent.futures.thread.ThreadPoolExecutor"
PACKAGE_DIR = os.path.dirname(os.path.abspath(executor_exporter.__file__))

_T = TypeVar("_T")


def sample(
    registry: CollectorRegistry,
    name: str,
    executor: str = "",
    executor_type: str = THREAD_TYPE,
    **labels: str,
) -> float | None:
    """Return one exported sample (``None`` when the series does not exist)."""
    return registry.get_sample_value(
        name, {"executor": executor, "executor_type": executor_type, **labels}
    )


def _check_histogram(h: HistogramStats, what: str) -> None:
    assert len(h.buckets) == len(h.bounds) + 1, what
    assert all(b >= 0 for b in h.buckets), (what, h.buckets)
    assert list(h.buckets) == sorted(h.buckets), (what, "buckets not cumulative", h.buckets)
    assert h.sum >= 0, (what, h.sum)
    assert not math.isnan(h.sum), what


def assert_invariants(stats: ExecutorStats, *, never_started: int = 0) -> None:
    """Check the invariants of spec section 4 on a snapshot taken at quiescence.

    ``never_started`` is the number of tasks that failed without starting (a broken
    pool): they are failed with duration 0 and have no wait observation.
    """
    counts = {
        "max_workers_total": stats.max_workers_total,
        "initialized_workers": stats.initialized_workers,
        "submitted": stats.submitted,
        "queued": stats.queued,
        "running": stats.running,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "rejected_shutdown": stats.rejected_shutdown,
        "rejected_broken": stats.rejected_broken,
        "workers": stats.workers or 0,
        "workers_max": stats.workers_max or 0,
    }
    negative = {k: v for k, v in counts.items() if v < 0}
    assert not negative, negative
    for name in ("busy_seconds", "oldest_queued_age", "oldest_running_age"):
        value = getattr(stats, name)
        assert value >= 0, (name, value)  # False for NaN too
    _check_histogram(stats.wait, "wait")
    _check_histogram(stats.completed_duration, "completed_duration")
    _check_histogram(stats.failed_duration, "failed_duration")
    assert stats.completed_duration.count == stats.completed
    assert stats.failed_duration.count == stats.failed
    assert stats.submitted == (
        stats.queued + stats.running + stats.completed + stats.failed + stats.cancelled
    ), stats
    started = stats.running + stats.completed + stats.failed - never_started
    assert stats.wait.count == started, (stats.wait.count, started, stats)
    if never_started:
        # Failed without starting: duration 0, so in the first bucket.
        assert stats.failed_duration.buckets[0] >= never_started


@dataclass(frozen=True)
class Exported:
    """The exported numbers of one (executor, executor_type) series set."""

    max_workers_total: float | None
    initialized: float | None
    submitted: float | None
    queued: float | None
    running: float | None
    completed: float | None
    failed: float | None
    cancelled: float | None
    rejected_shutdown: float | None
    rejected_broken: float | None
    wait_count: float | None
    workers: float | None
    workers_max: float | None
    busy: float | None
    oldest_queued_age: float | None
    oldest_running_age: float | None


def exported(
    registry: CollectorRegistry, executor: str = "", executor_type: str = THREAD_TYPE
) -> Exported:
    """Read every exported number of one series set."""

    def s(name: str, **labels: str) -> float | None:
        return sample(registry, name, executor, executor_type, **labels)

    return Exported(
        max_workers_total=s("python_executor_max_workers_total"),
        initialized=s("python_executor_initialized_workers_total"),
        submitted=s("python_executor_submitted_tasks_total"),
        queued=s("python_executor_queued_tasks"),
        running=s("python_executor_running_tasks_total"),
        completed=s("python_executor_tasks_duration_seconds_count", result="completed"),
        failed=s("python_executor_tasks_duration_seconds_count", result="failed"),
        cancelled=s("python_executor_cancelled_tasks_total"),
        rejected_shutdown=s("python_executor_rejected_tasks_total", reason="shutdown"),
        rejected_broken=s("python_executor_rejected_tasks_total", reason="broken"),
        wait_count=s("python_executor_task_wait_seconds_count"),
        workers=s("python_executor_workers"),
        workers_max=s("python_executor_workers_max"),
        busy=s("python_executor_busy_seconds_total"),
        oldest_queued_age=s("python_executor_oldest_queued_task_age_seconds"),
        oldest_running_age=s("python_executor_oldest_running_task_age_seconds"),
    )


def assert_exported_invariants(
    registry: CollectorRegistry,
    executor: str = "",
    executor_type: str = THREAD_TYPE,
    *,
    never_started: int = 0,
) -> Exported:
    """The section 4 invariants on the exported series (at quiescence); returns them."""
    e = exported(registry, executor, executor_type)
    assert e.submitted is not None, "series set not exported"
    assert e.queued is not None
    assert e.running is not None
    assert e.completed is not None
    assert e.failed is not None
    assert e.cancelled is not None
    assert e.wait_count is not None
    assert e.submitted == e.queued + e.running + e.completed + e.failed + e.cancelled, e
    assert e.wait_count == e.running + e.completed + e.failed - never_started, e
    for name, value in vars(e).items():
        assert value is None or value >= 0, (name, value)
    return e


def has_series(registry: CollectorRegistry, executor: str) -> bool:
    """Whether any sample carries ``executor=<executor>``."""
    return any(
        s.labels.get("executor") == executor
        for family in registry.collect()
        for s in family.samples
    )


def all_samples(registry: CollectorRegistry) -> list[Any]:
    """Every sample of every family in ``registry``."""
    return [s for family in registry.collect() for s in family.samples]


def require_module(name: str) -> Any:
    """Import ``name``; skip without it, or fail under ``CI=true`` (CI installs it)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} is not installed ({exc}); pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true, so this is a failure")
        pytest.skip(message)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def settle(pool: Any, timeout: float = 20.0, **expected: int) -> ExecutorStats:
    """Read ``pool.stats()`` until it shows ``expected`` (a process pool's results reach
    the parent a little later); after ``timeout`` seconds, the last reading, so that the
    caller's assertion shows what differs."""
    deadline = time.monotonic() + timeout
    while True:
        s: ExecutorStats = pool.stats()
        if all(getattr(s, k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return s
        time.sleep(0.01)


def tb_frames(tb: TracebackType | None) -> list[tuple[str, str, int]]:
    """(file, function, line) of every frame of a traceback, outermost first."""
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return out


class Gate:
    """Tasks call :meth:`block`, which waits until :meth:`open`; :meth:`wait_started`
    waits until a number of them have entered it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._entered = threading.Semaphore(0)

    def block(self, value: _T | None = None) -> _T | None:
        self._entered.release()
        if not self._open.wait(timeout=30):
            raise RuntimeError("gate never opened")
        return value

    def wait_started(self, n: int, timeout: float = 5.0) -> None:
        for _ in range(n):
            assert self._entered.acquire(timeout=timeout), "task did not start in time"

    def open(self) -> None:
        self._open.set()


def require_binary(name: str, package: str = "prometheus") -> str:
    """The path of ``name`` on PATH; skip without it, or fail under ``CI=true``."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (Debian: apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true, so this is a failure")
        pytest.skip(message)
    return path

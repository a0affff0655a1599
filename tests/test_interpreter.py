"""InterpreterPoolExecutor (3.14+): sub-interpreter workers, numbers true in this one."""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
import traceback
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import executor_exporter
from executor_exporter import instrument, uninstrument
from helpers import assert_invariants, sample, wait_until

INTERP_TYPE = "concurrent.futures.interpreter.InterpreterPoolExecutor"
HAS_POOL = hasattr(cf, "InterpreterPoolExecutor")
needs_pool = pytest.mark.skipif(not HAS_POOL, reason="InterpreterPoolExecutor is 3.14+")


@pytest.mark.skipif(HAS_POOL, reason="the stdlib has InterpreterPoolExecutor here")
def test_absent_before_3_14_as_in_the_stdlib() -> None:
    with pytest.raises(AttributeError, match=r"needs Python 3\.14"):
        executor_exporter.InterpreterPoolExecutor  # noqa: B018
    with pytest.raises(ImportError):
        from executor_exporter import InterpreterPoolExecutor  # noqa: F401
    assert "InterpreterPoolExecutor" not in executor_exporter.__all__
    with pytest.raises(AttributeError):
        executor_exporter.NoSuchName  # noqa: B018


def _pool(**kwargs: Any) -> Any:
    return executor_exporter.InterpreterPoolExecutor(**kwargs)


def _tb(exc: BaseException | None) -> list[tuple[str, str]]:
    assert exc is not None
    return [(f.filename, f.name) for f in traceback.extract_tb(exc.__traceback__)]


@needs_pool
def test_a_stdlib_interpreter_pool_with_its_numbers(registry: CollectorRegistry) -> None:
    with _pool(max_workers=2, executor_id="ip", registry=registry) as pool:
        assert isinstance(pool, cf.InterpreterPoolExecutor)
        assert pool.executor_id == "ip"
        assert pool.submit(pow, 2, 10).result() == 1024
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        assert list(pool.map(abs, range(-6, 0), buffersize=2)) == [6, 5, 4, 3, 2, 1]
        failed = pool.submit(int, "x")
        assert isinstance(failed.exception(), ValueError)
        # A script is refused by the stdlib at submit: not a task.
        with pytest.raises(TypeError, match="scripts not supported"):
            pool.submit("print(1)")
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed) == (11, 10, 1)
    assert s.executor_type == INTERP_TYPE
    assert s.initialized_workers == s.max_workers_total == 2
    assert_invariants(s)
    assert sample(registry, "python_executor_submitted_tasks_total", "ip", INTERP_TYPE) == 11
    labels = {"result": "failed"}
    assert (
        sample(
            registry, "python_executor_tasks_duration_seconds_count", "ip", INTERP_TYPE, **labels
        )
        == 1
    )


@needs_pool
def test_wait_ends_when_the_interpreter_starts_the_call(registry: CollectorRegistry) -> None:
    with _pool(max_workers=1, registry=registry) as pool:
        first = pool.submit(time.sleep, 0.5)
        second = pool.submit(time.sleep, 0.01)
        wait_until(lambda: pool.stats().running == 1, timeout=10)
        s = pool.stats()
        assert (s.running, s.queued, s.workers, s.workers_max) == (1, 1, 1, 1)
        first.result()
        second.result()
    s = pool.stats()
    assert s.wait.count == 2
    assert s.wait.sum >= 0.4  # the second waited for the first
    assert s.completed_duration.sum >= 0.5
    assert (s.workers, s.workers_max) == (0, 0)
    assert_invariants(s)


@needs_pool
def test_the_initializer_runs_inside_each_interpreter(registry: CollectorRegistry) -> None:
    # print is shareable; the initializer's stdout is the process's.
    with _pool(max_workers=2, initializer=abs, initargs=(-1,), registry=registry) as pool:
        list(pool.map(time.sleep, [0.2, 0.2]))
    assert pool.stats().initialized_workers == 2


@needs_pool
def test_a_failing_initializer_breaks_the_pool_like_the_stdlib(
    registry: CollectorRegistry,
) -> None:
    def outcome(pool: Any) -> tuple[type, str, type]:
        exc = pool.submit(pow, 2, 2).exception(timeout=10)
        wait_until(lambda: bool(pool._broken), timeout=10)
        with pytest.raises(cf.BrokenExecutor) as later:
            pool.submit(pow, 2, 2)
        pool.shutdown()
        return type(exc), str(exc), later.type

    std = outcome(cf.InterpreterPoolExecutor(1, initializer=int, initargs=("x",)))
    ours = _pool(max_workers=1, initializer=int, initargs=("x",), registry=registry)
    assert outcome(ours) == std
    assert std[0] is cf.interpreter.BrokenInterpreterPool
    s = ours.stats()
    assert (s.initialized_workers, s.failed, s.rejected_broken) == (0, 1, 1)
    assert_invariants(s, never_started=1)


@needs_pool
def test_tracebacks_are_the_stdlib_ones(registry: CollectorRegistry) -> None:
    with cf.InterpreterPoolExecutor(1) as plain, _pool(max_workers=1, registry=registry) as pool:
        expected = _tb(plain.submit(int, "x").exception())
        got = _tb(pool.submit(int, "x").exception())
    assert got == expected
    assert not [f for f in got if "executor_exporter" in f[0]]


@needs_pool
def test_instrument_covers_it(registry: CollectorRegistry) -> None:
    std = cf.InterpreterPoolExecutor
    instrument(registry=registry, thread_id="threads")
    try:
        assert cf.InterpreterPoolExecutor is not std
        assert cf.interpreter.InterpreterPoolExecutor is cf.InterpreterPoolExecutor
        with cf.InterpreterPoolExecutor(1) as pool:
            assert pool.submit(pow, 3, 2).result() == 9
        assert isinstance(pool, std) and isinstance(
            pool, executor_exporter.InterpreterPoolExecutor
        )
        assert sample(registry, "python_executor_submitted_tasks_total", "threads", INTERP_TYPE)
    finally:
        uninstrument()
    assert cf.InterpreterPoolExecutor is std and cf.interpreter.InterpreterPoolExecutor is std


@needs_pool
def test_constructor_errors_like_the_stdlib(registry: CollectorRegistry) -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((0,), {}),
        ((-1,), {}),
        (("four",), {}),
        ((), {"nonsense": 1}),
    ]
    for args, kwargs in cases:
        with pytest.raises((TypeError, ValueError)) as std:
            cf.InterpreterPoolExecutor(*args, **kwargs)
        with pytest.raises((TypeError, ValueError)) as ours:
            executor_exporter.InterpreterPoolExecutor(*args, registry=registry, **kwargs)
        assert (ours.type, str(ours.value).replace("executor_exporter.", "")) == (
            std.type,
            str(std.value),
        ), (args, kwargs)
    assert "InterpreterPoolExecutor" not in generate_latest(registry).decode()


@needs_pool
def test_is_exported_as_one_with_its_id(registry: CollectorRegistry) -> None:
    pools = [_pool(max_workers=1, executor_id="same", registry=registry) for _ in range(2)]
    for pool in pools:
        pool.submit(pow, 1, 1).result()
        pool.shutdown()
    assert sample(registry, "python_executor_max_workers_total", "same", INTERP_TYPE) == 2
    assert sample(registry, "python_executor_submitted_tasks_total", "same", INTERP_TYPE) == 2
    assert sys.version_info >= (3, 14)

"""The instrumented ThreadPoolExecutor: stdlib behaviour kept, every number exact.

Every test runs on both of the pool's paths: its own work items on the stdlib's queue
(known internals, the default) and each call wrapped in a ThreadTask through the stdlib's
submit (``EXECUTOR_EXPORTER_FALLBACK=1``, or an unknown interpreter).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from executor_exporter import DEFAULT_BUCKETS, ExecutorStats, ThreadPoolExecutor, _stdlib
from helpers import (
    PACKAGE_DIR,
    THREAD_TYPE,
    Gate,
    assert_exported_invariants,
    assert_invariants,
    exported,
    has_series,
    sample,
    tb_frames,
    wait_until,
)


@pytest.fixture(autouse=True, params=["own-items", "wrapped"])
def thread_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The pool's path for this test (see the module docstring)."""
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, "1" if request.param == "wrapped" else "0")
    return str(request.param)


class CustomBaseError(BaseException):
    """A BaseException that is not an Exception."""


def _raise(exc: BaseException) -> None:
    raise exc


def _raise_new(exc_type: type[BaseException]) -> None:
    raise exc_type("boom")  # no frame of the test holds the exception


def _inner(message: str) -> None:
    raise ValueError(message)


def _outer(message: str) -> None:
    _inner(message)


def _inv(x: float) -> float:
    return 1 / x


# -- results, exceptions, tracebacks ----------------------------------------------------


def test_is_a_stdlib_thread_pool(registry: CollectorRegistry) -> None:
    """isinstance holds (asyncio needs it) and executor_type names the stdlib class."""
    with ThreadPoolExecutor(1, registry=registry) as pool:
        assert isinstance(pool, cf.ThreadPoolExecutor)
        assert pool.stats().executor_type == THREAD_TYPE


def test_results_pass_through_unchanged(registry: CollectorRegistry) -> None:
    """The future carries the very object the task returned; each task is counted."""
    marker = object()
    with ThreadPoolExecutor(2, registry=registry) as pool:
        assert pool.submit(lambda: marker).result() is marker
        assert pool.submit(lambda: None).result() is None
        assert pool.submit(divmod, 17, 5).result() == (3, 2)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (3, 3, 0)
    assert (stats.workers, stats.workers_max) == (0, 0)  # the with block shut it down
    assert_invariants(stats)


def test_exception_object_passes_through(registry: CollectorRegistry) -> None:
    """The future holds the same exception object the task raised; counted failed."""
    exc = ValueError("boom")
    with ThreadPoolExecutor(1, registry=registry) as pool:
        fut = pool.submit(_raise, exc)
        assert fut.exception() is exc
        with pytest.raises(ValueError, match="boom") as info:
            fut.result()
        assert info.value is exc
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (1, 0, 1)
    assert stats.failed_duration.count == 1
    assert_invariants(stats)


def test_traceback_is_the_stdlib_one(registry: CollectorRegistry, thread_path: str) -> None:
    """The traceback has exactly the stdlib pool's frames and none from this library."""
    if thread_path == "wrapped" and sys.version_info < (3, 11):
        pytest.skip("3.10 keeps the wrapper's frame")
    with cf.ThreadPoolExecutor(1) as plain, ThreadPoolExecutor(1, registry=registry) as pool:
        expected = tb_frames(plain.submit(_outer, "x").exception().__traceback__)
        got = tb_frames(pool.submit(_outer, "x").exception().__traceback__)
        # A builtin raising: no Python frame of the task at all.
        expected_c = tb_frames(plain.submit(int, "nope").exception().__traceback__)
        got_c = tb_frames(pool.submit(int, "nope").exception().__traceback__)
    assert [f[1] for f in got][-2:] == ["_outer", "_inner"]
    assert got == expected
    assert got_c == expected_c
    assert not [f for f in got + got_c if f[0].startswith(PACKAGE_DIR)]


@pytest.mark.skipif(
    "PyTracer" in repr(sys.gettrace()),
    reason="coverage's pure-Python tracer (the only one on free-threaded 3.13) holds the "
    "frames it traced, the worker thread's among them; this runs wherever the suite is "
    "not measured that way (every GIL build, and free-threaded without coverage)",
)
@pytest.mark.parametrize("exc_type", [ValueError, KeyboardInterrupt])
def test_a_failed_task_leaves_no_cycle_behind(
    registry: CollectorRegistry, exc_type: type[BaseException]
) -> None:
    # Reference counting alone must free a finished worker thread: a cycle through the
    # task's frame kept it until the collector ran, and 3.10's own suite reports that
    # as a dangling thread.
    gc.collect()
    gc.disable()
    try:
        pool = ThreadPoolExecutor(1, registry=registry)
        worker = weakref.ref(pool.submit(threading.current_thread).result())
        failed = pool.submit(_raise_new, exc_type)
        assert isinstance(failed.exception(timeout=10), exc_type)
        del failed
        pool.shutdown(wait=True)
        del pool
        assert worker() is None, gc.get_referrers(worker())
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "make_exc", [CustomBaseError, KeyboardInterrupt, SystemExit, GeneratorExit]
)
def test_base_exception_fails_task(registry: CollectorRegistry, make_exc: type) -> None:
    """A BaseException raised in a task is counted failed and reaches the future."""
    exc = make_exc("stop")
    with ThreadPoolExecutor(1, registry=registry) as pool:
        fut = pool.submit(_raise, exc)
        assert fut.exception() is exc
        # The pool survives it.
        assert pool.submit(pow, 2, 3).result() == 8
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (2, 1, 1)
    assert stats.running == 0
    assert_invariants(stats)
    e = assert_exported_invariants(registry)
    assert (e.completed, e.failed) == (1, 1)


def test_kwargs_named_like_submit_parameters(registry: CollectorRegistry) -> None:
    """Keyword arguments named fn, self and key reach the task untouched."""

    def task(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    with ThreadPoolExecutor(1, registry=registry) as pool:
        got = pool.submit(task, 1, fn="f", self="s", key="k").result()
        assert got == ((1,), {"fn": "f", "self": "s", "key": "k"})
        with pytest.raises(TypeError):
            pool.submit(fn=task)  # fn is positional-only, as in the stdlib
    assert pool.stats().submitted == 1


# -- map -------------------------------------------------------------------------------


def test_map_ordered_several_iterables(registry: CollectorRegistry) -> None:
    """map keeps input order (even when later items finish first), zips iterables,
    and counts each item as a task."""

    def slow_pow(base: int, exp: int, delay: float) -> int:
        time.sleep(delay)
        return int(base**exp)

    with ThreadPoolExecutor(4, registry=registry) as pool:
        got = list(pool.map(slow_pow, [2, 3, 4, 5], [5, 2, 1], [0.06, 0.04, 0.0, 0.0]))
        assert got == [32, 9, 4]
        assert list(pool.map(abs, range(-5, 5), chunksize=3)) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (13, 13, 0)
    assert stats.wait.count == 13
    assert_invariants(stats)


def test_map_is_lazy(registry: CollectorRegistry, gate: Gate) -> None:
    """map returns at once while the tasks are still blocked; results come on demand."""
    with ThreadPoolExecutor(2, registry=registry) as pool:
        it = pool.map(gate.block, ["a", "b", "c"])
        gate.wait_started(2)
        stats = pool.stats()
        assert (stats.submitted, stats.running, stats.queued, stats.completed) == (3, 2, 1, 0)
        gate.open()
        assert next(it) == "a"
        assert list(it) == ["b", "c"]
    assert_invariants(pool.stats())


def test_map_exception_raised_when_reached(registry: CollectorRegistry) -> None:
    """Items before a failing one are yielded; its exception comes when it is reached."""
    with ThreadPoolExecutor(2, registry=registry) as pool:
        it = pool.map(_inv, [1, 2, 4, 0])
        assert next(it) == 1.0
        assert next(it) == 0.5
        assert next(it) == 0.25
        with pytest.raises(ZeroDivisionError):
            next(it)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.failed, stats.cancelled) == (4, 3, 1, 0)
    assert_invariants(stats)


def test_map_timeout(registry: CollectorRegistry, gate: Gate) -> None:
    """map's timeout raises TimeoutError; the items not started are cancelled."""
    pool = ThreadPoolExecutor(1, registry=registry)
    it = pool.map(gate.block, [1, 2, 3], timeout=0.5)
    gate.wait_started(1)
    with pytest.raises(cf.TimeoutError):
        next(it)
    gate.open()
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.cancelled, stats.failed) == (3, 1, 2, 0)
    assert stats.wait.count == 1
    assert (stats.queued, stats.running) == (0, 0)
    assert_invariants(stats)


# -- initializer -----------------------------------------------------------------------


def test_initializer_runs_in_every_worker(registry: CollectorRegistry, gate: Gate) -> None:
    """initializer(*initargs) runs once per worker thread (positional arguments, as in
    the stdlib); each is counted as an initialized worker."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    lock = threading.Lock()

    def init(*args: Any) -> None:
        with lock:
            calls.append((threading.current_thread().name, args))

    pool = ThreadPoolExecutor(3, "pfx", init, (1, "a"), registry=registry)
    futures = [pool.submit(gate.block, i) for i in range(3)]
    gate.wait_started(3)
    assert len(calls) == 3
    assert len({name for name, _ in calls}) == 3
    assert all(name.startswith("pfx") for name, _ in calls)
    assert all(args == (1, "a") for _, args in calls)
    assert pool.stats().initialized_workers == 3
    assert sample(registry, "python_executor_initialized_workers_total") == 3
    gate.open()
    assert [f.result() for f in futures] == [0, 1, 2]
    pool.shutdown()
    assert_invariants(pool.stats())


@pytest.mark.parametrize("n_tasks", [1, 2])
def test_initialized_workers_without_initializer(
    registry: CollectorRegistry, gate: Gate, n_tasks: int
) -> None:
    """Workers are counted as initialized when no initializer was given, one per thread
    actually started."""
    pool = ThreadPoolExecutor(4, initargs=("ignored",), registry=registry)
    for _ in range(n_tasks):
        pool.submit(gate.block)
    gate.wait_started(n_tasks)
    assert pool.stats().initialized_workers == n_tasks
    assert pool.stats().workers == n_tasks
    gate.open()
    pool.shutdown()
    assert pool.stats().initialized_workers == n_tasks


def _broken_scenario(pool: cf.ThreadPoolExecutor, release: threading.Event) -> dict[str, Any]:
    """Three tasks wait while the initializers are held, then the initializers fail."""
    futures = [pool.submit(pow, 2, i) for i in range(3)]
    release.set()
    excs = [f.exception(timeout=5) for f in futures]
    with pytest.raises(BrokenThreadPool) as submit_info:
        pool.submit(pow, 2, 2)
    with pytest.raises(BrokenThreadPool) as map_info:
        pool.map(pow, [2], [2])
    pool.shutdown()
    return {
        "future_types": [type(e) for e in excs],
        "future_messages": [str(e) for e in excs],
        "submit": (type(submit_info.value), str(submit_info.value)),
        "map": (type(map_info.value), str(map_info.value)),
    }


def test_failing_initializer_breaks_pool_like_stdlib(registry: CollectorRegistry) -> None:
    """A failing initializer gives BrokenThreadPool exactly as the stdlib does; the
    queued tasks fail without starting (duration 0, no wait), later submits are rejected
    as broken, and the invariants hold."""

    def make_init(release: threading.Event) -> Any:
        def init() -> None:
            release.wait(5)
            raise OSError("no connection")

        return init

    plain_release, release = threading.Event(), threading.Event()
    expected = _broken_scenario(
        cf.ThreadPoolExecutor(3, initializer=make_init(plain_release)), plain_release
    )
    pool = ThreadPoolExecutor(
        3, initializer=make_init(release), executor_id="b", registry=registry
    )
    got = _broken_scenario(pool, release)
    assert got == expected
    assert got["future_types"] == [BrokenThreadPool] * 3

    stats = pool.stats()
    assert stats.submitted == 3
    assert (stats.completed, stats.failed, stats.queued, stats.running) == (0, 3, 0, 0)
    assert stats.wait.count == 0
    assert stats.failed_duration.sum == 0.0
    assert stats.failed_duration.buckets[0] == 3
    assert (stats.rejected_broken, stats.rejected_shutdown) == (2, 0)
    assert stats.initialized_workers == 0
    assert stats.workers == 0
    assert_invariants(stats, never_started=3)

    e = assert_exported_invariants(registry, "b", never_started=3)
    assert (e.failed, e.rejected_broken, e.rejected_shutdown, e.wait_count) == (3, 2, 0, 0)
    assert (
        sample(registry, "python_executor_tasks_duration_seconds_sum", "b", result="failed") == 0.0
    )
    assert (
        sample(
            registry,
            "python_executor_tasks_duration_seconds_bucket",
            "b",
            result="failed",
            le=floatToGoString(DEFAULT_BUCKETS[0]),
        )
        == 3
    )


# -- shutdown, rejection, cancellation -------------------------------------------------


def test_submit_after_shutdown_rejected(registry: CollectorRegistry) -> None:
    """submit/map after shutdown raise the stdlib RuntimeError, counted as rejected
    {reason="shutdown"} and never as submitted."""
    plain = cf.ThreadPoolExecutor(1)
    plain.shutdown()
    with pytest.raises(RuntimeError) as expected:
        plain.submit(int)

    pool = ThreadPoolExecutor(1, registry=registry)
    pool.submit(int).result()
    pool.shutdown()
    with pytest.raises(RuntimeError) as info:
        pool.submit(int)
    assert type(info.value) is RuntimeError
    assert str(info.value) == str(expected.value)
    with pytest.raises(RuntimeError):
        pool.map(int, ["1", "2"])
    stats = pool.stats()
    assert (stats.submitted, stats.rejected_shutdown, stats.rejected_broken) == (1, 2, 0)
    assert_invariants(stats)
    e = exported(registry)
    assert (e.submitted, e.rejected_shutdown, e.rejected_broken) == (1, 2, 0)


def test_cancel_queued_future(registry: CollectorRegistry, gate: Gate) -> None:
    """cancel() on a queued future counts it cancelled; it is never observed in wait or
    duration; a running future cannot be cancelled and is not counted."""
    pool = ThreadPoolExecutor(1, registry=registry)
    running = pool.submit(gate.block)
    gate.wait_started(1)
    queued = [pool.submit(pow, 2, i) for i in range(4)]
    assert not running.cancel()
    assert queued[1].cancel()
    assert queued[3].cancel()
    stats = pool.stats()
    assert (stats.submitted, stats.cancelled, stats.queued, stats.running) == (5, 2, 2, 1)
    assert stats.wait.count == 1
    gate.open()
    pool.shutdown()
    assert [queued[0].result(), queued[2].result()] == [1, 4]
    stats = pool.stats()
    assert (stats.completed, stats.failed, stats.cancelled) == (3, 0, 2)
    assert stats.wait.count == 3
    assert stats.completed_duration.count == 3
    assert_invariants(stats)
    e = assert_exported_invariants(registry)
    assert (e.cancelled, e.wait_count, e.completed) == (2, 3, 3)


def test_shutdown_cancel_futures(registry: CollectorRegistry, gate: Gate) -> None:
    """shutdown(cancel_futures=True) cancels the queued tasks; running ones finish and
    running returns to 0."""
    pool = ThreadPoolExecutor(2, registry=registry)
    for _ in range(2):
        pool.submit(gate.block)
    gate.wait_started(2)
    queued = [pool.submit(pow, 2, i) for i in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    stats = pool.stats()
    assert (stats.cancelled, stats.queued, stats.running, stats.workers_max) == (5, 0, 2, 0)
    gate.open()
    pool.shutdown(wait=True)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.cancelled, stats.running) == (7, 2, 5, 0)
    assert stats.wait.count == 2
    assert_invariants(stats)


# -- ids and labels --------------------------------------------------------------------


def test_same_id_combines(registry: CollectorRegistry) -> None:
    """Instances sharing an id add up into one series set; stats() stays per instance."""
    p1 = ThreadPoolExecutor(2, executor_id="shared", registry=registry)
    p2 = ThreadPoolExecutor(3, executor_id="shared", registry=registry)
    cf.wait([p1.submit(int) for _ in range(2)] + [p2.submit(int) for _ in range(3)])
    e = exported(registry, "shared")
    assert (e.max_workers_total, e.workers_max, e.submitted, e.completed) == (5, 5, 5, 5)
    assert (p1.stats().submitted, p2.stats().submitted) == (2, 3)
    assert (p1.stats().max_workers_total, p2.stats().max_workers_total) == (2, 3)
    p1.shutdown()
    e = exported(registry, "shared")
    assert (e.max_workers_total, e.workers_max) == (5, 3)
    p2.shutdown()
    assert exported(registry, "shared").workers_max == 0


def test_different_ids_are_separate(registry: CollectorRegistry) -> None:
    """Different ids give different series; no id gives executor=""."""
    with (
        ThreadPoolExecutor(1, executor_id="a", registry=registry) as a,
        ThreadPoolExecutor(2, executor_id="b", registry=registry) as b,
        ThreadPoolExecutor(3, registry=registry) as anon,
    ):
        a.submit(int).result()
        for _ in range(2):
            b.submit(int).result()
        assert anon.executor_id == ""
        assert (a.executor_id, b.executor_id) == ("a", "b")
    assert exported(registry, "a").submitted == 1
    assert exported(registry, "b").submitted == 2
    assert exported(registry, "").submitted == 0
    assert exported(registry, "").max_workers_total == 3
    assert exported(registry, "b").max_workers_total == 2


def test_exporter_id_alias(registry: CollectorRegistry) -> None:
    """exporter_id is an alias of executor_id."""
    with ThreadPoolExecutor(1, exporter_id="alias", registry=registry) as pool:
        assert pool.executor_id == "alias"
        pool.submit(int).result()
    assert exported(registry, "alias").submitted == 1


def test_executor_id_and_exporter_id_together(registry: CollectorRegistry) -> None:
    """Passing both spellings is a TypeError and exports nothing."""
    with pytest.raises(TypeError):
        ThreadPoolExecutor(1, executor_id="a", exporter_id="b", registry=registry)
    assert generate_latest(registry) == b""


@pytest.mark.parametrize("bad_id", [1, b"db", ["db"], 1.5])
@pytest.mark.parametrize("keyword", ["executor_id", "exporter_id"])
def test_executor_id_must_be_str(registry: CollectorRegistry, bad_id: Any, keyword: str) -> None:
    """A non-str id is a TypeError and exports nothing."""
    with pytest.raises(TypeError):
        ThreadPoolExecutor(1, registry=registry, **{keyword: bad_id})
    assert generate_latest(registry) == b""


BAD_BUCKETS = [
    pytest.param([], ValueError, id="empty"),
    pytest.param([math.inf], ValueError, id="only-inf"),
    pytest.param([1.0, 0.5], ValueError, id="unsorted"),
    pytest.param([0.5, 0.5], ValueError, id="duplicate"),
    pytest.param([-1.0, 1.0], ValueError, id="negative"),
    pytest.param([0.1, math.nan], ValueError, id="nan"),
    pytest.param("0.1,1", TypeError, id="string"),
    pytest.param([0.1, "x"], TypeError, id="string-item"),
    pytest.param([0.1, None], TypeError, id="none-item"),
]


@pytest.mark.parametrize(("buckets", "exc"), BAD_BUCKETS)
@pytest.mark.parametrize("keyword", ["wait_buckets", "duration_buckets"])
def test_bad_buckets_rejected(
    registry: CollectorRegistry, keyword: str, buckets: Any, exc: type[Exception]
) -> None:
    """Bad bucket bounds raise ValueError/TypeError and export nothing."""
    with pytest.raises(exc):
        ThreadPoolExecutor(1, registry=registry, **{keyword: buckets})
    assert generate_latest(registry) == b""


def test_same_id_different_buckets(registry: CollectorRegistry) -> None:
    """A second instance of an id with other buckets raises ValueError and leaves the
    first one's series untouched; equivalent bucket lists are accepted."""
    first = ThreadPoolExecutor(2, executor_id="h", wait_buckets=[1, 2], registry=registry)
    first.submit(int).result()
    before = exported(registry, "h")
    with pytest.raises(ValueError, match="buckets"):
        ThreadPoolExecutor(5, executor_id="h", wait_buckets=[1, 3], registry=registry)
    with pytest.raises(ValueError, match="buckets"):
        ThreadPoolExecutor(
            5, executor_id="h", wait_buckets=[1, 2], duration_buckets=[1, 2], registry=registry
        )
    assert exported(registry, "h") == before
    assert before.max_workers_total == 2
    assert sample(registry, "python_executor_task_wait_seconds_bucket", "h", le="3.0") is None
    # Same bounds spelled differently: accepted and combined.
    same = ThreadPoolExecutor(
        1, executor_id="h", wait_buckets=(1.0, 2.0, math.inf), registry=registry
    )
    assert exported(registry, "h").max_workers_total == 3
    # Another id may use other buckets.
    ThreadPoolExecutor(1, executor_id="other", wait_buckets=[1, 3], registry=registry)
    assert sample(registry, "python_executor_task_wait_seconds_bucket", "other", le="3.0") == 0
    first.shutdown()
    same.shutdown()


def test_many_executors_no_duplicate_registration(registry: CollectorRegistry) -> None:
    """Creating many executors, sharing ids or not, never raises a duplicate-timeseries
    error; the shared id adds up."""
    pools = [ThreadPoolExecutor(2, executor_id="same", registry=registry) for _ in range(30)]
    pools += [ThreadPoolExecutor(1, executor_id=f"id{i}", registry=registry) for i in range(30)]
    pools += [ThreadPoolExecutor(1, registry=registry) for _ in range(3)]
    names = {
        s.labels["executor"]
        for family in registry.collect()
        for s in family.samples
        if s.name == "python_executor_submitted_tasks_total"
    }
    assert names == {"same", "", *(f"id{i}" for i in range(30))}
    assert exported(registry, "same").max_workers_total == 60
    assert exported(registry, "").max_workers_total == 3
    for p in pools:
        p.shutdown()


def test_nothing_registered_at_import() -> None:
    """Importing the package registers no metric and starts no thread."""
    code = (
        "import json, threading\n"
        "import executor_exporter\n"
        "from prometheus_client import REGISTRY\n"
        "names = sorted(m.name for m in REGISTRY.collect())\n"
        "print(json.dumps({'names': names, 'threads': threading.active_count()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout)
    assert result["threads"] == 1
    assert not [n for n in result["names"] if n.startswith("python_executor")]


# -- stdlib argument errors ------------------------------------------------------------


STDLIB_ARG_ERRORS = [
    pytest.param({"max_workers": 0}, id="zero"),
    pytest.param({"max_workers": -3}, id="negative"),
    pytest.param({"max_workers": "2"}, id="str"),
    pytest.param({"initializer": 5}, id="initializer-not-callable"),
    pytest.param({"max_workers": 0, "initializer": 5}, id="both-bad"),
]


@pytest.mark.parametrize("kwargs", STDLIB_ARG_ERRORS)
def test_stdlib_argument_errors_unchanged(
    registry: CollectorRegistry, kwargs: dict[str, Any]
) -> None:
    """Bad stdlib arguments raise the stdlib's exception type and message, and a failed
    constructor exports nothing."""
    with pytest.raises(Exception) as expected:  # noqa: PT011 - compared below
        cf.ThreadPoolExecutor(**kwargs)
    with pytest.raises(Exception) as got:  # noqa: PT011 - compared below
        ThreadPoolExecutor(**kwargs, executor_id="bad", registry=registry)
    assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value))
    assert generate_latest(registry) == b""


def test_default_max_workers(registry: CollectorRegistry) -> None:
    """max_workers=None gives the stdlib default size, which is what is exported."""
    with ThreadPoolExecutor(registry=registry) as pool:
        expected = min(32, (os.cpu_count() or 1) + 4)
        assert pool.stats().max_workers_total == expected
        assert pool.stats().workers_max == expected
        assert exported(registry).max_workers_total == expected


# -- saturation gauges -----------------------------------------------------------------


def test_saturation_gauges_blocked_pool(registry: CollectorRegistry, gate: Gate) -> None:
    """With every worker blocked: queued is the backlog, running is max_workers, both
    ages and busy time grow while nothing finishes; all return to 0 after shutdown."""
    pool = ThreadPoolExecutor(3, executor_id="sat", registry=registry)
    for _ in range(7):
        pool.submit(gate.block)
    gate.wait_started(3)
    s1 = pool.stats()
    e1 = exported(registry, "sat")
    time.sleep(0.1)
    s2 = pool.stats()
    e2 = exported(registry, "sat")
    for s, e in ((s1, e1), (s2, e2)):
        assert (s.submitted, s.queued, s.running, s.completed, s.failed) == (7, 4, 3, 0, 0)
        assert (s.workers, s.workers_max, s.max_workers_total) == (3, 3, 3)
        assert (e.queued, e.running, e.workers, e.workers_max) == (4, 3, 3, 3)
        assert s.oldest_queued_age > 0
        assert s.oldest_running_age > 0
        assert s.busy_seconds > 0
        assert e.oldest_queued_age
        assert e.oldest_running_age
        assert e.busy
        assert s.wait.count == 3
    assert s2.oldest_queued_age > s1.oldest_queued_age
    assert s2.oldest_running_age > s1.oldest_running_age
    assert s2.busy_seconds > s1.busy_seconds
    assert e2.oldest_queued_age > e1.oldest_queued_age  # type: ignore[operator]
    assert e2.oldest_running_age > e1.oldest_running_age  # type: ignore[operator]
    assert e2.busy > e1.busy  # type: ignore[operator]

    gate.open()
    pool.shutdown()
    s3 = pool.stats()
    assert (s3.queued, s3.running, s3.completed, s3.workers, s3.workers_max) == (0, 0, 7, 0, 0)
    assert (s3.oldest_queued_age, s3.oldest_running_age) == (0.0, 0.0)
    assert s3.max_workers_total == 3
    assert s3.busy_seconds >= s2.busy_seconds
    assert_invariants(s3)
    e3 = assert_exported_invariants(registry, "sat")
    assert (e3.queued, e3.running, e3.workers, e3.workers_max) == (0, 0, 0, 0)
    assert (e3.oldest_queued_age, e3.oldest_running_age, e3.max_workers_total) == (0, 0, 3)


def test_gauges_zero_at_quiescence(registry: CollectorRegistry) -> None:
    """Idle but alive: nothing queued or running, ages 0, workers still alive."""
    pool = ThreadPoolExecutor(4, registry=registry)
    cf.wait([pool.submit(time.sleep, 0.02) for _ in range(4)])
    stats = pool.stats()
    assert (stats.queued, stats.running, stats.completed) == (0, 0, 4)
    assert (stats.oldest_queued_age, stats.oldest_running_age) == (0.0, 0.0)
    assert 1 <= stats.workers <= 4  # type: ignore[operator]
    assert stats.workers_max == 4
    assert exported(registry).workers == stats.workers
    assert_invariants(stats)
    pool.shutdown()
    assert pool.stats().workers == 0


# -- asyncio ---------------------------------------------------------------------------


def test_asyncio_default_executor(registry: CollectorRegistry) -> None:
    """loop.set_default_executor accepts the pool; run_in_executor(None, ...) is counted
    and asyncio.run's final shutdown reaches the pool."""
    pool = ThreadPoolExecutor(2, executor_id="aio", registry=registry)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        return list(
            await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(10)))
        )

    assert asyncio.run(main()) == [i * i for i in range(10)]
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.workers_max, stats.workers) == (10, 10, 0, 0)
    assert_invariants(stats)
    assert exported(registry, "aio").submitted == 10


# -- stats -----------------------------------------------------------------------------


def test_stats_is_frozen_snapshot(registry: CollectorRegistry) -> None:
    """stats() returns a frozen ExecutorStats that does not change afterwards."""
    with ThreadPoolExecutor(1, executor_id="st", registry=registry) as pool:
        pool.submit(int).result()
        stats = pool.stats()
        pool.submit(int).result()
    assert isinstance(stats, ExecutorStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.submitted = 5  # type: ignore[misc]
    assert (stats.submitted, stats.finished, stats.executor_id) == (1, 1, "st")
    assert pool.stats().submitted == 2


def test_failed_constructor_leaves_earlier_series(registry: CollectorRegistry) -> None:
    """A failing constructor in a registry that already exports pools changes nothing."""
    with ThreadPoolExecutor(2, executor_id="ok", registry=registry) as pool:
        pool.submit(int).result()
        before = generate_latest(registry)
        with pytest.raises(ValueError, match="max_workers"):
            ThreadPoolExecutor(0, executor_id="new", registry=registry)
        with pytest.raises(TypeError):
            ThreadPoolExecutor(1, executor_id="ok", initializer="x", registry=registry)
        assert not has_series(registry, "new")
        assert exported(registry, "ok").max_workers_total == 2
        # Only time-varying numbers may differ; none changes here at rest.
        assert generate_latest(registry) == before


def test_submit_from_inside_task(registry: CollectorRegistry) -> None:
    """A task may submit to its own pool; both are counted."""
    pool = ThreadPoolExecutor(2, registry=registry)
    outer = pool.submit(lambda: pool.submit(pow, 3, 2))
    assert outer.result().result() == 9
    wait_until(lambda: pool.stats().completed == 2)
    pool.shutdown()
    stats = pool.stats()
    assert (stats.submitted, stats.completed) == (2, 2)
    assert_invariants(stats)


OUTCOMES = st.lists(st.sampled_from(["ok", "fail", "base", "cancel"]), max_size=12)


@settings(max_examples=25, deadline=None)
@given(outcomes=OUTCOMES)
def test_outcome_mix_counts_exactly(outcomes: list[str]) -> None:
    """Any mix of completing, failing (Exception or BaseException) and cancelled tasks
    queued behind a blocked worker gives exact counts and the invariants."""
    registry = CollectorRegistry()
    gate = Gate()
    pool = ThreadPoolExecutor(1, registry=registry)
    try:
        pool.submit(gate.block)
        gate.wait_started(1)
        futures = []
        for outcome in outcomes:
            if outcome == "fail":
                futures.append(pool.submit(_raise, ValueError()))
            elif outcome == "base":
                futures.append(pool.submit(_raise, CustomBaseError()))
            else:
                futures.append(pool.submit(abs, -1))
        for outcome, fut in zip(outcomes, futures, strict=True):
            if outcome == "cancel":
                assert fut.cancel()
        stats = pool.stats()
        assert stats.queued == len(outcomes) - outcomes.count("cancel")
        assert stats.running == 1
    finally:
        gate.open()
        pool.shutdown()
    n_failed = outcomes.count("fail") + outcomes.count("base")
    n_cancelled = outcomes.count("cancel")
    stats = pool.stats()
    assert stats.submitted == len(outcomes) + 1
    assert (stats.failed, stats.cancelled) == (n_failed, n_cancelled)
    assert stats.completed == len(outcomes) + 1 - n_failed - n_cancelled
    assert stats.wait.count == len(outcomes) + 1 - n_cancelled
    assert_invariants(stats)
    e = assert_exported_invariants(registry)
    assert (e.failed, e.cancelled) == (n_failed, n_cancelled)

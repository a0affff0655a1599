"""ExecutorExporter with InstrumentedExecutorProxy: forwarding and recording."""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from executor_exporter import DEFAULT_BUCKETS, ExecutorExporter, InstrumentedExecutorProxy
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
)


class CustomBaseError(BaseException):
    """A BaseException that is not an Exception."""


def _raise(exc: BaseException) -> None:
    raise exc


def _inner() -> None:
    raise ValueError("deep")


def _outer() -> None:
    _inner()


class InlineExecutor(cf.Executor):
    """Runs each call in submit, on the caller's thread; an old-style shutdown without
    cancel_futures; a map that must not be used."""

    def __init__(self) -> None:
        self.shutdown_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
        return future

    def map(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the proxy must build map on its own submit")

    def shutdown(self, wait: bool = True) -> None:  # type: ignore[override]
        self.shutdown_calls.append(((wait,), {}))


INLINE_TYPE = f"{InlineExecutor.__module__}.{InlineExecutor.__qualname__}"


class RecordingPool(cf.ThreadPoolExecutor):
    """A thread pool that records how shutdown was called."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        self.shutdown_calls.append((args, kwargs))
        super().shutdown(*args, **kwargs)


RECORDING_TYPE = f"{RecordingPool.__module__}.{RecordingPool.__qualname__}"


def make_proxy(
    registry: CollectorRegistry,
    executor: cf.Executor,
    executor_id: str | None = None,
    max_workers: int | None = None,
) -> InstrumentedExecutorProxy:
    exporter = ExecutorExporter(executor, executor_id, registry=registry)
    return InstrumentedExecutorProxy(executor, exporter, max_workers)


# -- construction and labels -----------------------------------------------------------


def test_proxy_labels_and_properties(registry: CollectorRegistry) -> None:
    """The proxy is an Executor; executor_type is the wrapped class's qualified name."""
    pool = cf.ThreadPoolExecutor(2)
    exporter = ExecutorExporter(pool, "px", registry=registry)
    proxy = InstrumentedExecutorProxy(pool, exporter, 2)
    assert isinstance(proxy, cf.Executor)
    assert (proxy.executor, proxy.exporter) == (pool, exporter)
    assert (exporter.executor_id, exporter.executor_type) == ("px", THREAD_TYPE)
    assert proxy.stats().executor_type == THREAD_TYPE
    proxy.shutdown()

    inline = make_proxy(registry, InlineExecutor())
    assert inline.exporter.executor_type == INLINE_TYPE
    assert inline.exporter.executor_id == ""
    assert inline.submit(int, "4").result() == 4
    assert exported(registry, "", INLINE_TYPE).submitted == 1


def test_proxy_series_without_max_workers(registry: CollectorRegistry) -> None:
    """Without max_workers: no workers nor workers_max series, initialized stays 0."""
    pool = cf.ThreadPoolExecutor(2)
    proxy = make_proxy(registry, pool, "nomax")
    proxy.submit(int).result()
    e = exported(registry, "nomax")
    assert (e.workers, e.workers_max) == (None, None)
    assert (e.max_workers_total, e.initialized, e.submitted, e.completed) == (0, 0, 1, 1)
    stats = proxy.stats()
    assert (stats.workers, stats.workers_max, stats.initialized_workers) == (None, None, 0)
    proxy.shutdown()
    e = exported(registry, "nomax")
    assert (e.workers, e.workers_max) == (None, None)


def test_proxy_series_with_max_workers(registry: CollectorRegistry) -> None:
    """With max_workers: workers_max while live, 0 after shutdown; still no workers."""
    proxy = make_proxy(registry, cf.ThreadPoolExecutor(4), "max", max_workers=4)
    proxy.submit(int).result()
    e = exported(registry, "max")
    assert (e.workers, e.workers_max, e.max_workers_total, e.initialized) == (None, 4, 4, 0)
    assert proxy.stats().workers_max == 4
    proxy.shutdown()
    e = exported(registry, "max")
    assert (e.workers, e.workers_max, e.max_workers_total) == (None, 0, 4)


def test_two_proxies_same_id_combine(registry: CollectorRegistry) -> None:
    """Proxies of the same executor type and id add up; other ids stay apart."""
    a = make_proxy(registry, cf.ThreadPoolExecutor(2), "pp", max_workers=2)
    b = make_proxy(registry, cf.ThreadPoolExecutor(3), "pp", max_workers=3)
    c = make_proxy(registry, cf.ThreadPoolExecutor(1), "other", max_workers=1)
    cf.wait([a.submit(int), b.submit(int), b.submit(int), c.submit(int)])
    e = exported(registry, "pp")
    assert (e.max_workers_total, e.workers_max, e.submitted) == (5, 5, 3)
    assert exported(registry, "other").submitted == 1
    for p in (a, b, c):
        p.shutdown()


@pytest.mark.parametrize(
    ("max_workers", "exc"),
    [(0, ValueError), (-2, ValueError), (True, TypeError), (1.5, TypeError), ("2", TypeError)],
)
def test_proxy_bad_max_workers(registry: CollectorRegistry, max_workers: Any, exc: type) -> None:
    """max_workers must be a positive int or None."""
    exporter = ExecutorExporter(InlineExecutor(), "mw", registry=registry)
    with pytest.raises(exc):
        InstrumentedExecutorProxy(InlineExecutor(), exporter, max_workers)
    assert exported(registry, "mw", INLINE_TYPE).max_workers_total == 0


def test_proxy_needs_an_exporter(registry: CollectorRegistry) -> None:
    """The exporter argument must be an ExecutorExporter."""
    with pytest.raises(TypeError):
        InstrumentedExecutorProxy(InlineExecutor(), object(), 2)  # type: ignore[arg-type]


def test_exporter_needs_an_executor(registry: CollectorRegistry) -> None:
    """ExecutorExporter refuses an object without submit and exports nothing."""
    with pytest.raises(TypeError):
        ExecutorExporter(object(), "x", registry=registry)
    assert generate_latest(registry) == b""


def test_exporter_id_rules(registry: CollectorRegistry) -> None:
    """executor_id positional or keyword, exporter_id alias, both is TypeError, non-str
    is TypeError; failures export nothing."""
    assert ExecutorExporter(InlineExecutor(), "pos", registry=registry).executor_id == "pos"
    assert (
        ExecutorExporter(InlineExecutor(), exporter_id="al", registry=registry).executor_id == "al"
    )
    with pytest.raises(TypeError):
        ExecutorExporter(InlineExecutor(), "a", exporter_id="b", registry=registry)
    with pytest.raises(TypeError):
        ExecutorExporter(InlineExecutor(), 7, registry=registry)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ExecutorExporter(
            InlineExecutor(),
            exporter_id=b"x",  # type: ignore[arg-type]
            registry=registry,
        )
    ids = {s.labels["executor"] for fam in registry.collect() for s in fam.samples}
    assert ids == {"pos", "al"}


@pytest.mark.parametrize(
    ("buckets", "exc"),
    [
        ([], ValueError),
        ([2, 1], ValueError),
        ([-1, 1], ValueError),
        ([float("nan")], ValueError),
        ("1,2", TypeError),
    ],
)
def test_exporter_bad_buckets(registry: CollectorRegistry, buckets: Any, exc: type) -> None:
    """Bad buckets raise and export nothing."""
    with pytest.raises(exc):
        ExecutorExporter(InlineExecutor(), "b", registry=registry, wait_buckets=buckets)
    with pytest.raises(exc):
        ExecutorExporter(InlineExecutor(), "b", registry=registry, duration_buckets=buckets)
    assert generate_latest(registry) == b""


def test_exporter_same_id_other_buckets(registry: CollectorRegistry) -> None:
    """A second exporter of an id with other buckets raises and registers nothing."""
    first = make_proxy(registry, InlineExecutor(), "hb")
    first.submit(int).result()
    with pytest.raises(ValueError, match="buckets"):
        ExecutorExporter(InlineExecutor(), "hb", registry=registry, duration_buckets=[1])
    assert exported(registry, "hb", INLINE_TYPE).submitted == 1
    assert (
        sample(
            registry,
            "python_executor_tasks_duration_seconds_bucket",
            "hb",
            INLINE_TYPE,
            result="completed",
            le=floatToGoString(DEFAULT_BUCKETS[-1]),
        )
        == 1
    )


class SlottedExecutor:
    """An executor-like object that cannot be weakly referenced."""

    __slots__ = ()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        return InlineExecutor().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        pass


def test_exporter_on_unweakrefable_executor(registry: CollectorRegistry) -> None:
    """An executor without __weakref__ is either exported fully or refused without
    leaving a half-registered series behind."""
    slotted_type = f"{SlottedExecutor.__module__}.{SlottedExecutor.__qualname__}"
    try:
        exporter = ExecutorExporter(SlottedExecutor(), "slotted", registry=registry)
    except TypeError:
        assert not has_series(registry, "slotted"), "refused, yet its series are exported"
    else:
        proxy = InstrumentedExecutorProxy(SlottedExecutor(), exporter)  # type: ignore[arg-type]
        assert proxy.submit(pow, 2, 5).result() == 32
        assert exported(registry, "slotted", slotted_type).submitted == 1


# -- pass-through ----------------------------------------------------------------------


def test_proxy_results_exceptions_kwargs(registry: CollectorRegistry) -> None:
    """Results and exception objects pass through unchanged; kwargs named fn, self and
    key reach the task."""
    marker = object()
    exc = LookupError("x")

    def echo(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    with make_proxy(registry, cf.ThreadPoolExecutor(2), "pt") as proxy:
        assert proxy.submit(lambda: marker).result() is marker
        assert proxy.submit(_raise, exc).exception() is exc
        assert proxy.submit(echo, fn=1, self=2, key=3).result() == {"fn": 1, "self": 2, "key": 3}
        stats = proxy.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (3, 2, 1)
    assert_invariants(stats)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps one wrapper frame")
def test_proxy_traceback_is_the_stdlib_one(registry: CollectorRegistry) -> None:
    """Through the proxy the traceback has the stdlib pool's frames, none of ours."""
    with cf.ThreadPoolExecutor(1) as plain, make_proxy(registry, cf.ThreadPoolExecutor(1)) as p:
        expected = tb_frames(plain.submit(_outer).exception().__traceback__)
        got = tb_frames(p.submit(_outer).exception().__traceback__)
    assert got == expected
    assert not [f for f in got if f[0].startswith(PACKAGE_DIR)]


@pytest.mark.parametrize("make_exc", [CustomBaseError, KeyboardInterrupt, SystemExit])
def test_proxy_base_exception_fails_task(registry: CollectorRegistry, make_exc: type) -> None:
    """A BaseException raised in a task is failed and reaches the future."""
    exc = make_exc()
    with make_proxy(registry, cf.ThreadPoolExecutor(1), "be") as proxy:
        assert proxy.submit(_raise, exc).exception() is exc
    stats = proxy.stats()
    assert (stats.submitted, stats.completed, stats.failed, stats.running) == (1, 0, 1, 0)
    assert_invariants(stats)


def test_proxy_inline_executor_nested(registry: CollectorRegistry) -> None:
    """An executor running calls on the caller's thread, with a task submitting another
    task: both counted, nothing left running."""
    proxy = make_proxy(registry, InlineExecutor(), "inl", max_workers=1)

    def outer() -> int:
        return proxy.submit(pow, 2, 4).result() + 1

    assert proxy.submit(outer).result() == 17
    stats = proxy.stats()
    assert (stats.submitted, stats.completed, stats.running, stats.queued) == (2, 2, 0, 0)
    assert stats.oldest_running_age == 0.0
    assert_invariants(stats)
    assert_exported_invariants(registry, "inl", INLINE_TYPE)


# -- map -------------------------------------------------------------------------------


def test_proxy_map_built_on_submit(registry: CollectorRegistry) -> None:
    """map goes through the proxy's submit (the wrapped map is never called): ordered,
    several iterables, each item a task, exception raised when its item is reached."""
    proxy = make_proxy(registry, InlineExecutor(), "map")
    assert list(proxy.map(pow, [2, 3, 4], [3, 2])) == [8, 9]
    it = proxy.map(lambda x: 1 / x, [1, 2, 0])
    assert next(it) == 1.0
    assert next(it) == 0.5
    with pytest.raises(ZeroDivisionError):
        next(it)
    stats = proxy.stats()
    assert (stats.submitted, stats.completed, stats.failed) == (5, 4, 1)
    assert_invariants(stats)


def test_proxy_map_lazy_and_timeout(registry: CollectorRegistry, gate: Gate) -> None:
    """map returns while tasks block; its timeout raises TimeoutError and cancels the
    items not started."""
    proxy = make_proxy(registry, cf.ThreadPoolExecutor(1), "mt")
    it = proxy.map(gate.block, [1, 2, 3], timeout=0.5)
    gate.wait_started(1)
    stats = proxy.stats()
    assert (stats.submitted, stats.running, stats.queued) == (3, 1, 2)
    with pytest.raises(cf.TimeoutError):
        next(it)
    gate.open()
    proxy.shutdown()
    stats = proxy.stats()
    assert (stats.completed, stats.cancelled, stats.wait.count) == (1, 2, 1)
    assert_invariants(stats)


# -- shutdown, cancellation, rejection, broken -----------------------------------------


def test_shutdown_forwards_cancel_futures_only_when_true(registry: CollectorRegistry) -> None:
    """shutdown passes cancel_futures on only when true, so executors without it work."""
    old = InlineExecutor()
    proxy = make_proxy(registry, old)
    proxy.shutdown()
    proxy.shutdown(wait=False)
    proxy.shutdown(False, cancel_futures=False)
    assert old.shutdown_calls == [((True,), {}), ((False,), {}), ((False,), {})]

    new = RecordingPool(1)
    proxy2 = make_proxy(registry, new)
    proxy2.shutdown(wait=True, cancel_futures=True)
    assert new.shutdown_calls == [((True,), {"cancel_futures": True})]


def test_proxy_context_manager(registry: CollectorRegistry) -> None:
    """with proxy: yields the proxy and shuts the wrapped executor down on exit."""
    old = InlineExecutor()
    proxy = make_proxy(registry, old, "cm", max_workers=2)
    with proxy as entered:
        assert entered is proxy
        assert entered.submit(pow, 3, 3).result() == 27
        assert old.shutdown_calls == []
    assert old.shutdown_calls == [((True,), {})]
    assert exported(registry, "cm", INLINE_TYPE).workers_max == 0


def test_proxy_cancel_and_cancel_futures(registry: CollectorRegistry, gate: Gate) -> None:
    """cancel() and shutdown(cancel_futures=True) count cancelled tasks, which never
    appear in wait or duration; running returns to 0."""
    pool = RecordingPool(1)
    proxy = make_proxy(registry, pool, "cx", max_workers=1)
    proxy.submit(gate.block)
    gate.wait_started(1)
    queued = [proxy.submit(pow, 2, i) for i in range(5)]
    assert queued[0].cancel()
    stats = proxy.stats()
    assert (stats.cancelled, stats.queued, stats.running) == (1, 4, 1)
    proxy.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.open()
    pool.shutdown(wait=True)
    stats = proxy.stats()
    assert (stats.submitted, stats.completed, stats.cancelled, stats.running) == (6, 1, 5, 0)
    assert stats.wait.count == 1
    assert_invariants(stats)
    assert_exported_invariants(registry, "cx", RECORDING_TYPE)


def test_proxy_rejected_after_shutdown(registry: CollectorRegistry) -> None:
    """A submit refused by a shut-down executor raises RuntimeError, counted rejected
    {reason="shutdown"}, never submitted."""
    proxy = make_proxy(registry, cf.ThreadPoolExecutor(1), "rj")
    proxy.submit(int).result()
    proxy.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        proxy.submit(int)
    with pytest.raises(RuntimeError):
        proxy.map(int, ["1"])
    stats = proxy.stats()
    assert (stats.submitted, stats.rejected_shutdown, stats.rejected_broken) == (1, 2, 0)
    e = exported(registry, "rj")
    assert (e.submitted, e.rejected_shutdown, e.rejected_broken) == (1, 2, 0)


def test_proxy_other_submit_errors_pass_through(registry: CollectorRegistry) -> None:
    """An exception from the wrapped submit propagates unchanged and is not submitted."""
    exc = ValueError("refused")

    class Refusing(InlineExecutor):
        def submit(self, fn: Callable[..., Any], /, *a: Any, **k: Any) -> cf.Future[Any]:
            raise exc

    proxy = make_proxy(registry, Refusing(), "ref")
    with pytest.raises(ValueError, match="refused") as info:
        proxy.submit(int)
    assert info.value is exc
    assert proxy.stats().submitted == 0
    assert proxy.stats().queued == 0


def test_proxy_broken_pool(registry: CollectorRegistry) -> None:
    """A wrapped pool broken by its initializer: the waiting tasks fail without starting
    (duration 0, no wait) and later submits count rejected{reason="broken"}."""
    release = threading.Event()

    def init() -> None:
        release.wait(5)
        raise OSError("init failed")

    proxy = make_proxy(registry, cf.ThreadPoolExecutor(2, initializer=init), "brk")
    futures = [proxy.submit(int) for _ in range(3)]
    release.set()
    assert all(isinstance(f.exception(timeout=5), BrokenThreadPool) for f in futures)
    with pytest.raises(BrokenThreadPool):
        proxy.submit(int)
    proxy.shutdown()
    stats = proxy.stats()
    assert (stats.submitted, stats.failed, stats.completed, stats.wait.count) == (3, 3, 0, 0)
    assert (stats.rejected_broken, stats.rejected_shutdown) == (1, 0)
    assert (stats.failed_duration.sum, stats.failed_duration.buckets[0]) == (0.0, 3)
    assert (stats.queued, stats.running) == (0, 0)
    assert_invariants(stats, never_started=3)
    assert_exported_invariants(registry, "brk", never_started=3)


# -- saturation ------------------------------------------------------------------------


def test_proxy_saturation_gauges(registry: CollectorRegistry, gate: Gate) -> None:
    """Blocked wrapped pool: queued backlog, running, growing ages and busy time; all
    back to 0 after release and shutdown."""
    proxy = make_proxy(registry, cf.ThreadPoolExecutor(2), "psat", max_workers=2)
    for _ in range(5):
        proxy.submit(gate.block)
    gate.wait_started(2)
    s1 = proxy.stats()
    time.sleep(0.1)
    s2 = proxy.stats()
    e2 = exported(registry, "psat")
    for s in (s1, s2):
        assert (s.submitted, s.queued, s.running, s.completed) == (5, 3, 2, 0)
        assert (s.workers, s.workers_max) == (None, 2)
        assert s.oldest_queued_age > 0
        assert s.oldest_running_age > 0
        assert s.busy_seconds > 0
    assert s2.oldest_queued_age > s1.oldest_queued_age
    assert s2.oldest_running_age > s1.oldest_running_age
    assert s2.busy_seconds > s1.busy_seconds
    assert (e2.queued, e2.running, e2.workers, e2.workers_max) == (3, 2, None, 2)
    gate.open()
    proxy.shutdown()
    s3 = proxy.stats()
    assert (s3.queued, s3.running, s3.completed, s3.workers_max) == (0, 0, 5, 0)
    assert (s3.oldest_queued_age, s3.oldest_running_age) == (0.0, 0.0)
    assert_invariants(s3)

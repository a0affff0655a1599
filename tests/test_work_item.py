"""The thread pool's own work items (known internals): chosen, recorded, and freed.

The pool queues an item of its own that the worker runs with the stdlib's ``run``, and
that is its own future until the call ends (see ``executor_exporter._work_item``).  The
behaviour tests of ``test_thread.py`` run on this path and on the wrapped one; these
check what is particular to it: which path a pool takes, and that the item's short
cycle is broken however the call ends, so that reference counting alone frees it and
all it holds, as the stdlib's item is freed.
"""

from __future__ import annotations

import gc
import operator
import weakref
from collections.abc import Iterator
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from executor_exporter import ThreadPoolExecutor, _stdlib
from executor_exporter._task import ThreadTask
from executor_exporter._work_item import TaskWorkItem, WorkItem
from helpers import Gate, assert_invariants, wait_until

ITEM = TaskWorkItem if _stdlib.WORK_ITEM_TAKES_TASK else WorkItem


@pytest.fixture(autouse=True)
def no_fallback_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_stdlib.FALLBACK_ENV, raising=False)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects meanwhile."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Payload:
    """An argument whose death tells that nothing holds the call any more."""


def _queued_call(pool: ThreadPoolExecutor, gate: Gate) -> Any:
    """The pending call of a task queued behind one that blocks the only worker."""
    pool.submit(gate.block)
    gate.wait_started(1)
    pool.submit(pow, 2, 3)
    (call,) = pool._ee_state.pending
    return call


@pytest.mark.parametrize(
    ("fallback", "expected"), [("0", ITEM), ("1", ThreadTask)], ids=["default", "forced"]
)
def test_the_pool_queues_its_own_items_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
    registry: CollectorRegistry,
    gate: Gate,
    fallback: str,
    expected: type,
) -> None:
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, fallback)
    with ThreadPoolExecutor(1, registry=registry) as pool:
        assert type(_queued_call(pool, gate)) is expected
        gate.open()
    assert pool.stats().completed == 2


def test_an_unknown_pool_layout_takes_the_wrapped_path(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, gate: Gate
) -> None:
    """A pool missing one of the names the items need (a moved private name)."""
    monkeypatch.setattr(_stdlib, "_THREAD_POOL_NAMES", ("_no_such_name",))
    with ThreadPoolExecutor(1, registry=registry) as pool:
        assert type(_queued_call(pool, gate)) is ThreadTask
        gate.open()
    assert pool.stats().completed == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("work_item_run", None), ("global_shutdown_lock", None)],
    ids=["run", "global-lock"],
)
def test_each_moved_thread_name_makes_the_layout_unknown(
    monkeypatch: pytest.MonkeyPatch, name: str, value: Any
) -> None:
    monkeypatch.setattr(_stdlib, name, value)
    assert not _stdlib._layout_is_known()


def test_a_run_of_another_shape_makes_the_layout_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_stdlib, "WORK_ITEM_TAKES_TASK", not _stdlib.WORK_ITEM_TAKES_TASK)
    assert not _stdlib._layout_is_known()


# -- however the call ends, reference counting frees the item ----------------------------


def _freed(ref: weakref.ref[Payload]) -> bool:
    return ref() is None


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_an_item_that_ran_is_freed(registry: CollectorRegistry, outcome: str) -> None:
    payload = Payload()
    ref = weakref.ref(payload)
    fn = divmod if outcome == "failed" else operator.is_
    with ThreadPoolExecutor(1, registry=registry) as pool:
        future = pool.submit(fn, payload, 0)
        del payload
        future.exception(timeout=10)
        # The future's exception holds the traceback, whose frames (3.14's worker context
        # among them, in the stdlib's pool too) hold the call: let it go first.
        del future
        # The worker drops its reference just after the future is done.
        wait_until(lambda: _freed(ref), timeout=10)
    stats = pool.stats()
    assert (stats.completed, stats.failed) == ((1, 0) if outcome == "completed" else (0, 1))


@pytest.mark.usefixtures("no_gc")
def test_an_item_cancelled_while_queued_is_freed(registry: CollectorRegistry, gate: Gate) -> None:
    payload = Payload()
    ref = weakref.ref(payload)
    with ThreadPoolExecutor(1, registry=registry) as pool:
        pool.submit(gate.block)
        gate.wait_started(1)
        future = pool.submit(id, payload)
        del payload
        assert future.cancel()
        gate.open()
    # The worker skipped it: the stdlib's run asked the item, which let go of itself.
    assert _freed(ref)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.cancelled, stats.queued) == (2, 1, 1, 0)
    assert_invariants(stats)


@pytest.mark.usefixtures("no_gc")
def test_items_cancelled_by_shutdown_are_freed(registry: CollectorRegistry, gate: Gate) -> None:
    refs = []
    pool = ThreadPoolExecutor(1, registry=registry)
    pool.submit(gate.block)
    gate.wait_started(1)
    for _ in range(3):
        payload = Payload()
        refs.append(weakref.ref(payload))
        pool.submit(id, payload)
    del payload
    pool.shutdown(wait=False, cancel_futures=True)
    gate.open()
    pool.shutdown(wait=True)
    assert all(_freed(r) for r in refs)
    stats = pool.stats()
    assert (stats.submitted, stats.completed, stats.cancelled, stats.queued) == (4, 1, 3, 0)
    assert_invariants(stats)


def _fail_once_open(gate: Gate) -> None:
    gate.block()
    raise RuntimeError("initializer failed")


@pytest.mark.usefixtures("no_gc")
def test_items_failed_by_a_broken_pool_are_freed(registry: CollectorRegistry, gate: Gate) -> None:
    refs = []
    futures = []
    pool = ThreadPoolExecutor(1, initializer=_fail_once_open, initargs=(gate,), registry=registry)
    for _ in range(3):
        payload = Payload()
        refs.append(weakref.ref(payload))
        futures.append(pool.submit(id, payload))
    del payload
    gate.wait_started(1)
    gate.open()  # the initializer fails with three calls queued
    for future in futures:
        assert isinstance(future.exception(timeout=10), BrokenThreadPool)
    del future, futures
    pool.shutdown(wait=True)
    assert all(_freed(r) for r in refs)
    stats = pool.stats()
    # Failed without starting: counted failed, with no duration, none of them running.
    assert (stats.submitted, stats.failed, stats.completed, stats.running) == (3, 3, 0, 0)
    assert_invariants(stats, never_started=3)

"""``map(..., buffersize=)`` (Python 3.14+) on our pools and the proxy: the stdlib's way.

Every case runs the same way on the stdlib's executor and on ours and compares what the
caller sees; then it checks our numbers.  With ``buffersize`` the stdlib submits at most
that many calls ahead of the consumer (a call is one item, or one chunk of a process
pool's ``map``), so ``submitted`` (which counts items) rises as results are consumed.

Below 3.14 the stdlib has no ``buffersize``: only the refusal is checked there, which
must be the stdlib's own (same exception, same words).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import math
import multiprocessing as mp
import sys
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import proc_tasks as t
import py314_tasks as pt
from executor_exporter import (
    ExecutorExporter,
    ExecutorStats,
    InstrumentedExecutorProxy,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    _stdlib,
)
from executor_exporter import process as process_module
from helpers import (
    THREAD_TYPE,
    assert_exported_invariants,
    assert_invariants,
    exported,
    settle,
    wait_until,
)

HAS_BUFFERSIZE = sys.version_info >= (3, 14)
needs_314 = pytest.mark.skipif(
    not HAS_BUFFERSIZE,
    reason="map(buffersize=) is new in Python 3.14; the stdlib here lacks it "
    "(test_buffersize_refused_like_stdlib_before_314 checks the refusal instead)",
)

PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"
ID = "buffered"
TIMEOUT = 30.0
# "fork-public": our process pool on its public-API path (internals unknown, see _stdlib).
KINDS = ["thread", "proxy", "fork", "spawn", "forkserver", "fork-public"]
# The chunk functions a process pool's map submits: the stdlib's, and ours (its
# public-API path chunks the same way with a function of its own).
_CHUNK_FUNCS = (getattr(cf.process, "_process_chunk", None), process_module._own_chunk)

Ours = ThreadPoolExecutor | ProcessPoolExecutor | InstrumentedExecutorProxy
Outcome = tuple[Any, ...]


class Kind:
    """Makes the stdlib executor and ours of one kind, ours exported to ``registry``."""

    def __init__(self, name: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.registry = registry
        self.method = name.removesuffix("-public")
        self.public = name.endswith("-public")
        self.process = self.method in ("fork", "spawn", "forkserver")
        self.executor_type = PROCESS_TYPE if self.process else THREAD_TYPE

    def calls_of(self, chunksize: int) -> int:
        """Items per call the stdlib's map makes (thread pools ignore chunksize)."""
        return chunksize if self.process else 1

    def std(self, workers: int) -> cf.Executor:
        if self.process:
            return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context(self.method))
        return cf.ThreadPoolExecutor(workers)

    def ours(self, workers: int) -> Ours:
        if self.process:
            with pytest.MonkeyPatch.context() as mp_patch:
                if self.public:
                    mp_patch.setattr(_stdlib, "KNOWN", False)
                    mp_patch.setattr(_stdlib, "_warned", True)
                return ProcessPoolExecutor(
                    workers,
                    mp_context=mp.get_context(self.method),
                    executor_id=ID,
                    registry=self.registry,
                )
        if self.name == "thread":
            return ThreadPoolExecutor(workers, executor_id=ID, registry=self.registry)
        inner = cf.ThreadPoolExecutor(workers)
        exporter = ExecutorExporter(inner, ID, registry=self.registry)
        return InstrumentedExecutorProxy(inner, exporter, workers)


class Recorder:
    """Stands in for an executor's ``submit`` (an instance attribute: ``Executor.map``
    calls ``self.submit``) and keeps every call's future with the items it carries."""

    def __init__(self, pool: cf.Executor) -> None:
        self.calls: list[tuple[cf.Future[Any], list[Any]]] = []
        self._submit = pool.submit
        pool.submit = self.submit  # type: ignore[method-assign]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future = self._submit(fn, *args, **kwargs)
        if isinstance(fn, partial) and fn.func in _CHUNK_FUNCS:
            items = [a[0] for a in args[0]]  # a chunk: a tuple of argument tuples
        else:
            items = [args[0]]
        self.calls.append((future, items))
        return future

    @property
    def items(self) -> int:
        return sum(len(items) for _, items in self.calls)

    def submitted_items(self) -> set[Any]:
        return {x for _, items in self.calls for x in items}

    def cancelled_items(self) -> set[Any]:
        return {x for f, items in self.calls if f.cancelled() for x in items}

    def all_done(self) -> bool:
        return all(f.done() for f, _ in self.calls)


def submitted_after(consumed: int, n: int, buffersize: int, per_call: int) -> int:
    """Items the stdlib's map has submitted once ``consumed`` results were taken: it
    submits ``buffersize`` calls at once, then one more before it yields the first
    result of each call (``per_call`` items to a call)."""
    calls = min(math.ceil(n / per_call), buffersize + math.ceil(consumed / per_call))
    return min(n, calls * per_call)


def raised(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """The type and words of what ``call(*args, **kwargs)`` raises (or that it did not)."""
    try:
        call(*args, **kwargs)
    except Exception as exc:
        return (type(exc), str(exc))
    return ("no exception",)


def map_outcome(results: Iterable[Any]) -> Outcome:
    """The values a map iterator yields, then what it raises (if anything)."""
    values = []
    try:
        for value in results:
            values.append(value)
    except Exception as exc:
        return (values, type(exc), str(exc))
    return (values, None)


def check_quiescent(
    pool: Ours, kind: Kind, *, never_started: int = 0, **expected: int
) -> ExecutorStats:
    """At the end: exact counts, nothing queued or running, the invariants."""
    s = settle(pool, **expected)
    got = {name: getattr(s, name) for name in expected}
    assert got == expected, s
    assert (s.queued, s.running) == (0, 0), s
    assert s.submitted == s.completed + s.failed + s.cancelled, s
    assert (s.rejected_shutdown, s.rejected_broken) == (0, 0), s
    assert_invariants(s, never_started=never_started)
    e = assert_exported_invariants(
        kind.registry, ID, kind.executor_type, never_started=never_started
    )
    assert (e.submitted, e.completed, e.failed, e.cancelled) == (
        s.submitted,
        s.completed,
        s.failed,
        s.cancelled,
    ), e
    return s


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Kind:
    return Kind(request.param, registry)


# -- before 3.14: refused like the stdlib ------------------------------------------------


@pytest.mark.skipif(HAS_BUFFERSIZE, reason="3.14+ has map(buffersize=): the other tests")
def test_buffersize_refused_like_stdlib_before_314(kind: Kind) -> None:
    std, ours = kind.std(1), kind.ours(1)
    try:
        for chunksize in (1, 2):
            expected = raised(std.map, t.square, [1, 2], chunksize=chunksize, buffersize=2)
            got = raised(ours.map, t.square, [1, 2], chunksize=chunksize, buffersize=2)
            assert expected[0] is TypeError, expected
            assert got == expected
        s = ours.stats()
        assert (s.submitted, s.rejected_shutdown, s.rejected_broken) == (0, 0, 0), s
        assert list(ours.map(t.square, [1, 2])) == [1, 4]  # the pool still works
    finally:
        std.shutdown()
        ours.shutdown()


# -- 3.14+ ------------------------------------------------------------------------------


@needs_314
@pytest.mark.parametrize("bad", [0, -1, False, 1.5, "3"], ids=repr)
def test_bad_buffersize_like_stdlib(kind: Kind, bad: Any) -> None:
    std, ours = kind.std(1), kind.ours(1)
    try:
        for chunksize in (1, 2):
            expected = raised(std.map, t.square, range(3), chunksize=chunksize, buffersize=bad)
            got = raised(ours.map, t.square, range(3), chunksize=chunksize, buffersize=bad)
            assert expected[0] in (TypeError, ValueError), expected
            assert got == expected
        s = ours.stats()
        # Refused before any submit: neither submitted nor rejected.
        assert (s.submitted, s.queued, s.rejected_shutdown, s.rejected_broken) == (0, 0, 0, 0)
        assert list(ours.map(t.square, range(3), buffersize=1)) == [0, 1, 4]
    finally:
        std.shutdown()
        ours.shutdown()
    check_quiescent(ours, kind, submitted=3, completed=3, failed=0, cancelled=0)


@needs_314
@pytest.mark.parametrize("chunksize", [1, 3])
def test_buffered_map_submits_as_results_are_consumed(kind: Kind, chunksize: int) -> None:
    """Step by step: our submitted count is the items the stdlib's map has submitted."""
    n, buffersize = 20, 3
    per_call = kind.calls_of(chunksize)
    std = kind.std(2)
    counting = Recorder(std)
    ours = kind.ours(2)
    with std, ours:
        it_std = std.map(t.square, range(n), chunksize=chunksize, buffersize=buffersize)
        it = ours.map(t.square, range(n), chunksize=chunksize, buffersize=buffersize)
        for consumed in range(n):
            want = submitted_after(consumed, n, buffersize, per_call)
            got = (ours.stats().submitted, counting.items)
            assert got == (want, want), (consumed, got, want)
            assert (next(it), next(it_std)) == (consumed * consumed, consumed * consumed)
        assert ours.stats().submitted == counting.items == n
        with pytest.raises(StopIteration):
            next(it)
        with pytest.raises(StopIteration):
            next(it_std)
    s = check_quiescent(ours, kind, submitted=n, completed=n, failed=0, cancelled=0)
    assert s.wait.count == n


@needs_314
def test_buffered_map_of_several_iterables_like_stdlib(kind: Kind) -> None:
    """zip() semantics: the shortest iterable ends the map; results as the stdlib's."""

    def scenario(pool: cf.Executor) -> Any:
        first = list(pool.map(t.add, range(10), range(0, 70, 10), buffersize=2))
        chunked = list(pool.map(t.add, range(7), range(100, 110), chunksize=3, buffersize=1))
        return first, chunked

    with kind.std(2) as std:
        expected = scenario(std)
    with kind.ours(2) as ours:
        got = scenario(ours)
    assert got == expected
    assert expected == ([0, 11, 22, 33, 44, 55, 66], [100, 102, 104, 106, 108, 110, 112])
    check_quiescent(ours, kind, submitted=14, completed=14, failed=0, cancelled=0)


@needs_314
@pytest.mark.parametrize("how", ["close", "drop"])
@pytest.mark.parametrize("chunksize", [1, 2])
def test_buffered_map_closed_early_cancels_what_was_submitted_ahead(
    kind: Kind, how: str, chunksize: int, tmp_path: Path
) -> None:
    """One worker; items from 2 on block.  Two results taken, item 2 running, then the
    iterator is closed (or dropped): the calls submitted ahead that had not started are
    cancelled, the rest run; the numbers add up."""
    n, buffersize = 20, 4
    per_call = kind.calls_of(chunksize)

    def scenario(pool: cf.Executor, folder: Path) -> tuple[int, set[int], set[int]]:
        folder.mkdir()
        rec = Recorder(pool)
        it = pool.map(
            pt.mark_then_wait,
            range(n),
            [str(folder)] * n,
            [2] * n,
            chunksize=chunksize,
            buffersize=buffersize,
        )
        assert [next(it), next(it)] == [0, 1]
        wait_until(lambda: 2 in pt.started_items(str(folder)), TIMEOUT)
        if how == "close":
            it.close()
        else:
            del it  # the generator is finalized at once: it cancels in its finally
        cancelled = rec.cancelled_items()
        pt.release(str(folder))
        wait_until(rec.all_done, TIMEOUT)
        pool.shutdown(wait=True)
        ran = pt.started_items(str(folder))
        # What never ran is exactly what was cancelled.
        assert ran == rec.submitted_items() - cancelled, (ran, cancelled)
        return rec.items, cancelled, ran

    expected = scenario(kind.std(1), tmp_path / "std")
    ours = kind.ours(1)
    got = scenario(ours, tmp_path / "ours")
    submitted = submitted_after(2, n, buffersize, per_call)
    assert got[0] == expected[0] == submitted
    assert got[1] and expected[1], "nothing was cancelled"
    if not kind.process:
        # One worker thread, nothing handed over ahead: only 0, 1 and 2 ever ran.
        assert got == expected == (submitted, set(range(3, submitted)), {0, 1, 2})
    cancelled = len(got[1])
    s = check_quiescent(
        ours,
        kind,
        submitted=submitted,
        completed=submitted - cancelled,
        failed=0,
        cancelled=cancelled,
    )
    assert s.wait.count == submitted - cancelled


@needs_314
@pytest.mark.parametrize("chunksize", [1, 3])
def test_buffered_map_item_raises_like_stdlib(kind: Kind, chunksize: int) -> None:
    """Item 7 raises: the values before it, then its exception, as the stdlib; the
    calls left in the buffer are cancelled or run; every item is accounted for."""

    def scenario(pool: cf.Executor) -> tuple[Outcome, Recorder]:
        rec = Recorder(pool)
        with pool:
            got = map_outcome(pool.map(t.raise_at, range(10), chunksize=chunksize, buffersize=2))
            wait_until(rec.all_done, TIMEOUT)
        return got, rec

    expected, _ = scenario(kind.std(2))
    ours = kind.ours(2)
    got, rec = scenario(ours)
    # The stdlib loses the whole failing chunk: only the chunks before it are yielded.
    per_call = kind.calls_of(chunksize)
    assert expected == (list(range(7 - 7 % per_call)), ValueError, "bad item 7")
    assert got == expected
    assert rec.items == 10
    # The items after 7 in its own call never run: failed, duration 0, no wait.
    (failing,) = [items for _, items in rec.calls if 7 in items]
    never_started = len(failing) - failing.index(7) - 1
    cancelled = len(rec.cancelled_items())
    failed = 1 + never_started
    s = check_quiescent(
        ours,
        kind,
        never_started=never_started,
        submitted=10,
        completed=10 - failed - cancelled,
        failed=failed,
        cancelled=cancelled,
    )
    assert s.wait.count == 10 - cancelled - never_started


@needs_314
def test_buffered_map_timeout_like_stdlib(kind: Kind) -> None:
    """The timeout covers the whole map: the 1 s item times out after 0.5 s; the calls
    left in the buffer are cancelled, or run if already handed to a worker."""

    def scenario(pool: cf.Executor) -> tuple[Outcome, Recorder]:
        with pool:
            pool.submit(t.square, 0).result(timeout=TIMEOUT)  # workers up: not timed below
            rec = Recorder(pool)
            items = [0.0, 1.0, 0.0]
            got = map_outcome(pool.map(t.sleep_return, items, timeout=0.5, buffersize=1))
            wait_until(rec.all_done, TIMEOUT)
        return got, rec

    expected, _ = scenario(kind.std(1))
    ours = kind.ours(1)
    got, rec = scenario(ours)
    assert expected[:2] == ([0.0], TimeoutError)
    assert got == expected
    cancelled = len(rec.cancelled_items())
    check_quiescent(
        ours,
        kind,
        submitted=rec.items + 1,
        completed=rec.items + 1 - cancelled,
        failed=0,
        cancelled=cancelled,
    )


@needs_314
@pytest.mark.parametrize("consumed", [0, 1])
def test_buffered_map_does_not_keep_a_shut_down_pool_alive(kind: Kind, consumed: int) -> None:
    """The stdlib's result iterator holds the executor weakly: a pool shut down and
    dropped while a buffered map iterator lives on is freed, and the iterator then
    yields what it holds and stops.  Ours must go the same way (kept alive, it would be
    asked to submit after shutdown and raise instead).

    NB 3.14's iterator keeps the executor it last resubmitted to in a local
    (``executor := executor_weakref()``) while suspended at its ``yield``: once a
    result was taken, the stdlib's pool stays alive.  The outcome is compared with the
    stdlib's either way; it is pinned only where the weak reference holds."""

    def scenario(make: Callable[[], cf.Executor]) -> tuple[Any, ...]:
        pool = make()
        it = pool.map(t.square, range(10), buffersize=2)
        first = [next(it) for _ in range(consumed)]
        pool.shutdown(wait=True)
        ref = weakref.ref(pool)
        del pool
        gc.collect()
        return first, ref() is not None, map_outcome(it)

    expected = scenario(lambda: kind.std(2))
    got = scenario(lambda: kind.ours(2))
    assert got == expected
    if consumed == 0:
        assert expected == ([], False, ([0, 1], None))
        submitted = 2
    else:
        submitted = 3
    if not got[1]:
        # Our pool is gone; its numbers stay exported, settled.
        e = exported(kind.registry, ID, kind.executor_type)
        assert (e.submitted, e.completed, e.failed, e.cancelled) == (submitted, submitted, 0, 0)
        assert (e.queued, e.running, e.workers_max) == (0, 0, 0), e

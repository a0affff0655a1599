"""A stateful model of ThreadPoolExecutor: random steps, the numbers checked after each one.

The model counts what the stdlib futures say happened (a ``cancel()`` that returned
True, a future that is done with a result or an exception); the pool's ``stats()`` and
the exported samples must agree with it wherever the value is deterministic, and exactly
once every known task has finished.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from prometheus_client import CollectorRegistry

from executor_exporter import ExecutorStats, ThreadPoolExecutor
from helpers import assert_exported_invariants, assert_invariants, exported

EXECUTOR = "model"
TIMEOUT = 5.0


class TaskAbort(BaseException):
    """Raised inside a task: a BaseException that is not an Exception."""


def ok(x: int) -> int:
    return x


def fail(x: int) -> int:
    raise ValueError(f"task {x} failed")


def abort(x: int) -> int:
    raise TaskAbort(x)


class GatedTask:
    """A task that blocks on its gate; ``entered`` tells that a worker started it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, x: int) -> int:
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("gate never opened")
        return x


FUNCS: dict[str, Callable[[int], int]] = {"ok": ok, "exc": fail, "base": abort}
# What a task of each kind ends as when it runs: completed or failed.
OUTCOME = {"ok": "completed", "gated": "completed", "exc": "failed", "base": "failed"}
EXC_TYPE: dict[str, type[BaseException]] = {"exc": ValueError, "base": TaskAbort}


@dataclass
class Rec:
    """One submitted task: its stdlib future and what it should end as."""

    future: cf.Future[int]
    kind: str
    value: int
    gated: GatedTask | None = None

    def known_outcome(self) -> str | None:
        """``completed``/``failed`` once its future is done (not cancelled), else None."""
        f = self.future
        if not f.done() or f.cancelled():
            return None
        return OUTCOME[self.kind]

    def check_result(self) -> None:
        """The future carries what the stdlib would give: the value or the exception."""
        f = self.future
        assert f.done()
        if f.cancelled():
            return
        exc = f.exception(timeout=0)
        if self.kind in EXC_TYPE:
            assert type(exc) is EXC_TYPE[self.kind], (self.kind, exc)
        else:
            assert exc is None, (self.kind, exc)
            assert f.result(timeout=0) == self.value


@dataclass
class PendingMap:
    """A ``map`` result iterator not consumed yet, with the futures behind it."""

    iterator: Iterator[int]
    recs: list[Rec] = field(default_factory=list)


class ThreadPoolModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = CollectorRegistry()
        self.pool: ThreadPoolExecutor | None = None
        self.max_workers = 0
        self.recs: list[Rec] = []
        self.maps: list[PendingMap] = []
        self.gates: list[GatedTask] = []
        self.counter = 0
        # The model: counts the stdlib futures vouch for.
        self.submitted = 0
        self.cancelled = 0
        self.rejected_shutdown = 0
        self.is_shut_down = False
        #: Every worker is held by a gated task known to have started: nothing else can
        #: start or finish, so every count is exact.
        self.saturated = False
        self.threads_before = threading.active_count()

    # -- helpers ----------------------------------------------------------------------

    @property
    def p(self) -> ThreadPoolExecutor:
        assert self.pool is not None
        return self.pool

    def next_value(self) -> int:
        self.counter += 1
        return self.counter

    def blocked(self) -> bool:
        """Whether some gated task may still hold a worker (later tasks may queue)."""
        return any(not g.gate.is_set() for g in self.gates)

    def count_cancellations(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; add the futures it cancelled to the model."""
        before = {id(r.future) for r in self.recs if r.future.cancelled()}
        try:
            return action()
        finally:
            after = {id(r.future) for r in self.recs if r.future.cancelled()}
            assert before <= after  # a cancelled future stays cancelled
            self.cancelled += len(after - before)

    def submit_rejected(self, call: Callable[[], Any]) -> None:
        """After shutdown: the stdlib's RuntimeError, counted as rejected."""
        with pytest.raises(RuntimeError) as info:
            call()
        assert str(info.value) == "cannot schedule new futures after shutdown"
        self.rejected_shutdown += 1

    def wait_all(self) -> None:
        # Not cf.wait on every future: one cancelled by shutdown(cancel_futures=True) is
        # never "notified" (no worker sees it), and cf.wait never counts it as done.
        live = [r.future for r in self.recs if not r.future.cancelled()]
        _, not_done = cf.wait(live, timeout=TIMEOUT)
        assert not not_done, f"{len(not_done)} tasks never finished"

    def consume(self, pm: PendingMap) -> None:
        """Drain a map iterator: it yields in order, raises at the first item that failed
        or was cancelled, and then cancels the items after it that have not started."""
        got: list[int] = []

        def drain() -> type[BaseException] | None:
            try:
                for value in pm.iterator:
                    got.append(value)
            except BaseException as exc:  # TaskAbort too: it is what the item raised
                return type(exc)
            return None

        raised = self.count_cancellations(drain)
        # What the iterator had to show, read from the futures it went through.
        expected: list[int] = []
        expected_exc: type[BaseException] | None = None
        for r in pm.recs:
            if r.future.cancelled():
                expected_exc = cf.CancelledError
                break
            assert r.future.done()
            exc = r.future.exception(timeout=0)
            if exc is not None:
                expected_exc = type(exc)
                break
            expected.append(r.future.result(timeout=0))
        assert got == expected
        assert raised is expected_exc

    # -- steps ------------------------------------------------------------------------

    @initialize(max_workers=st.integers(1, 3), hold=st.booleans())
    def start(self, max_workers: int, hold: bool) -> None:
        self.max_workers = max_workers
        self.pool = ThreadPoolExecutor(max_workers, executor_id=EXECUTOR, registry=self.registry)
        if hold:  # start with every worker held: what follows queues
            self.saturate()

    @rule(kinds=st.lists(st.sampled_from(sorted(FUNCS)), min_size=1, max_size=3))
    def submit(self, kinds: list[str]) -> None:
        recs = []
        for kind in kinds:
            value = self.next_value()
            if self.is_shut_down:
                self.submit_rejected(lambda: self.p.submit(FUNCS[kind], value))  # noqa: B023
                continue
            rec = Rec(self.p.submit(FUNCS[kind], value), kind, value)
            recs.append(rec)
            self.recs.append(rec)
            self.submitted += 1
        if not self.blocked():
            # Nothing holds a worker: they run now; once done, they are counted.
            cf.wait([r.future for r in recs], timeout=TIMEOUT)
            for rec in recs:
                assert rec.future.done()
                rec.check_result()

    @rule()
    def submit_gated(self) -> None:
        value = self.next_value()
        task = GatedTask()
        if self.is_shut_down:
            self.submit_rejected(lambda: self.p.submit(task, value))
            return
        self.gates.append(task)
        self.recs.append(Rec(self.p.submit(task, value), "gated", value, task))
        self.submitted += 1

    @rule()
    def saturate(self) -> None:
        """Hold every worker with a gated task, each known started: later tasks queue."""
        if self.is_shut_down or self.blocked():
            self.submit_gated()
            return
        self.wait_all()  # an idle pool: every worker thread, or room for it, is free
        tasks = [GatedTask() for _ in range(self.max_workers)]
        for task in tasks:
            value = self.next_value()
            self.gates.append(task)
            self.recs.append(Rec(self.p.submit(task, value), "gated", value, task))
            self.submitted += 1
        for task in tasks:
            assert task.entered.wait(TIMEOUT), "a gated task never started"
        self.saturated = True

    @rule(n=st.integers(0, 4), fail_at=st.none() | st.integers(0, 3), base=st.booleans())
    def map(self, n: int, fail_at: int | None, base: bool) -> None:
        first = self.counter + 1
        self.counter += n
        bad = None if fail_at is None or fail_at >= n else first + fail_at
        kind = "base" if base else "exc"

        def fn(x: int) -> int:
            if x == bad:
                return FUNCS[kind](x)
            # A little slow: when an item fails, the map iterator finds the items after
            # it still queued, and cancels them.
            time.sleep(0.002)
            return x

        if self.is_shut_down and n:
            self.submit_rejected(lambda: self.p.map(fn, range(first, first + n)))
            return
        # Watch the futures map makes (it calls self.submit): the model needs them.
        real_submit = self.p.submit
        futures: list[cf.Future[int]] = []

        def spy(f: Callable[..., int], *args: Any) -> cf.Future[int]:
            future = real_submit(f, *args)
            futures.append(future)
            return future

        self.p.submit = spy  # type: ignore[method-assign]
        try:
            iterator = self.p.map(fn, range(first, first + n))
        finally:
            del self.p.submit
        assert len(futures) == n
        pm = PendingMap(iterator)
        for i, future in enumerate(futures):
            value = first + i
            rec = Rec(future, kind if value == bad else "ok", value)
            pm.recs.append(rec)
            self.recs.append(rec)
        self.submitted += n
        if self.blocked():
            self.maps.append(pm)
        else:
            self.consume(pm)

    @rule(index=st.integers(0, 10_000))
    def cancel(self, index: int) -> None:
        # Queued futures first (cancel() succeeds on those), then running, then any.
        candidates = (
            [r for r in self.recs if not r.future.done() and not r.future.running()]
            or [r for r in self.recs if not r.future.done()]
            or self.recs
        )
        if not candidates:
            return
        rec = candidates[index % len(candidates)]
        holding = rec.gated is not None and rec.gated.entered.is_set()
        was_done = rec.future.done()
        if rec.future.cancel():
            assert not holding, "a started task was cancelled"
            assert rec.future.cancelled()
            if not was_done:
                self.cancelled += 1
        else:
            assert not rec.future.cancelled()

    @rule()
    def release_gates(self) -> None:
        for g in self.gates:
            g.gate.set()
        self.saturated = False
        self.wait_all()
        maps, self.maps = self.maps, []
        for pm in maps:
            self.consume(pm)
        for r in self.recs:
            r.check_result()
        self.check(quiescent=True)

    @rule(wait=st.booleans(), cancel_futures=st.booleans())
    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        opener = None
        if wait:
            # shutdown(wait=True) waits for the gated tasks: open their gates a little
            # later, once it has cancelled (cancel_futures=True) what was queued.
            gates = list(self.gates)
            opener = threading.Timer(0.02, lambda: [g.gate.set() for g in gates])
            opener.start()
            self.saturated = False
        try:
            self.count_cancellations(
                lambda: self.p.shutdown(wait=wait, cancel_futures=cancel_futures)
            )
        finally:
            if opener is not None:
                opener.join()
        self.is_shut_down = True
        if wait:
            # Every accepted task has finished or was cancelled.
            assert all(r.future.done() for r in self.recs)
            self.check(quiescent=True)

    # -- checks -----------------------------------------------------------------------

    def check(self, *, quiescent: bool = False) -> ExecutorStats:
        # Settled: every future done before anything is read (not after: a task still
        # running now may end while we read, and the counts below would be stale).
        settled = quiescent or all(r.future.done() for r in self.recs)
        # Lower bounds first: what is known finished now was recorded before its future
        # was done, so the snapshot taken next shows it.
        known = {"completed": 0, "failed": 0}
        for r in self.recs:
            outcome = r.known_outcome()
            if outcome is not None:
                known[outcome] += 1
        holding = sum(1 for g in self.gates if g.entered.is_set() and not g.gate.is_set())
        s = self.p.stats()
        e = exported(self.registry, EXECUTOR)
        # At most what may ever end so: every task of that kind not cancelled.
        possible = {"completed": 0, "failed": 0}
        for r in self.recs:
            if not r.future.cancelled():
                possible[OUTCOME[r.kind]] += 1

        assert s.submitted == self.submitted, (s, self.submitted)
        assert s.cancelled == self.cancelled, (s, self.cancelled)
        assert s.rejected_shutdown == self.rejected_shutdown, s
        assert s.rejected_broken == 0, s
        assert s.max_workers_total == self.max_workers, s
        assert s.workers_max == (0 if self.is_shut_down else self.max_workers), s
        assert known["completed"] <= s.completed <= possible["completed"], (known, s)
        assert known["failed"] <= s.failed <= possible["failed"], (known, s)
        assert s.queued >= 0, s
        assert s.running >= 0, s
        assert holding <= s.running <= self.max_workers, (holding, s)
        assert s.initialized_workers <= self.max_workers, s
        assert s.workers is not None and s.workers <= self.max_workers, s
        # This test is the only submitter and canceller, and each task moves between
        # states by one store into its worker's slot: the identity holds at every read.
        assert s.submitted == s.queued + s.running + s.completed + s.failed + s.cancelled, s

        # Exported: the values nobody else changes between the two reads.
        assert e.submitted == self.submitted, e
        assert e.cancelled == self.cancelled, e
        assert e.rejected_shutdown == self.rejected_shutdown, e
        assert e.rejected_broken == 0, e
        assert e.max_workers_total == self.max_workers, e
        assert e.workers_max == s.workers_max, e
        assert e.queued is not None and e.queued >= 0, e
        assert e.running is not None and e.running >= 0, e

        if self.saturated:
            assert holding == self.max_workers
            queued = sum(
                1
                for r in self.recs
                if not r.future.done() and not (r.gated is not None and r.gated.entered.is_set())
            )
            assert (s.completed, s.failed) == (known["completed"], known["failed"]), (known, s)
            assert (s.running, s.queued) == (self.max_workers, queued), (queued, s)
            assert s.wait.count == s.completed + s.failed + s.running, s
            assert s.oldest_running_age > 0, s
            assert (s.oldest_queued_age > 0) == (queued > 0), s
            assert (e.completed, e.failed, e.running, e.queued, e.wait_count) == (
                s.completed,
                s.failed,
                s.running,
                s.queued,
                s.wait.count,
            ), e

        if settled:
            assert known == possible, (known, possible)
            assert (s.completed, s.failed) == (known["completed"], known["failed"]), s
            assert (s.queued, s.running) == (0, 0), s
            assert s.oldest_queued_age == s.oldest_running_age == 0, s
            assert_invariants(s)
            e = assert_exported_invariants(self.registry, EXECUTOR)
            assert (e.completed, e.failed, e.queued, e.running) == (
                s.completed,
                s.failed,
                0,
                0,
            ), e
            assert e.wait_count == s.wait.count == s.completed + s.failed, (e, s)
        return s

    @invariant()
    def numbers_agree(self) -> None:
        if self.pool is not None:
            self.check()

    def teardown(self) -> None:
        if self.pool is None:
            return
        for g in self.gates:
            g.gate.set()
        self.saturated = False
        try:
            self.wait_all()
            for pm in self.maps:
                self.consume(pm)
            self.maps = []
            self.count_cancellations(lambda: self.p.shutdown(wait=True))
            self.is_shut_down = True
            s = self.check(quiescent=True)
            # Every thread started ran our initializer count, and is gone now.
            assert s.initialized_workers == len(self.p._threads), s  # type: ignore[attr-defined]
            assert s.workers == 0, s
            e = exported(self.registry, EXECUTOR)
            assert (e.workers, e.workers_max, e.initialized) == (0, 0, s.initialized_workers)
            assert threading.active_count() <= self.threads_before
        finally:
            self.p.shutdown(wait=True, cancel_futures=True)


ThreadPoolModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestThreadPoolModel = ThreadPoolModel.TestCase

"""The numbers of one executor instance, and how they add up at read time.

Writers never compute gauges.  Worker slots hold counters (see ``_layout``); the
submitting side holds a few counters under a lock and the set of calls not yet done.
Everything a scrape shows (queued, running, ages, busy time) is derived here when it is
read, which keeps the per-task cost to a handful of additions.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor
from operator import add
from typing import Any, Protocol

from ._layout import (
    ABANDONED,
    COMPLETED_SUM,
    FAILED_SUM,
    INITIALIZED,
    RUN_START,
    SUBMITTED,
    SUBMITTER_WIDTH,
    WAIT_SUM,
    Layout,
)
from ._slots import ThreadSlots
from .stats import ExecutorStats, HistogramStats

_SWEEP_MIN = 1024


class SlotSource(Protocol):
    """Where the worker slots of an executor live (thread lists or shared memory)."""

    def snapshot(self) -> list[list[float]]: ...


class Call(Protocol):
    """What the pending set holds, each under its future: one submitted call."""

    t_submit: float
    n: int
    started: bool


class Totals:
    """Summable numbers: one instance's reading, or several added up."""

    __slots__ = (
        "busy",
        "cancelled",
        "completed",
        "completed_sum",
        "failed",
        "failed_sum",
        "initialized",
        "max_workers_total",
        "oldest_queued_age",
        "oldest_running_age",
        "queued",
        "rejected_broken",
        "rejected_shutdown",
        "running",
        "submitted",
        "wait",
        "wait_sum",
        "workers",
        "workers_max",
    )

    def __init__(self, layout: Layout) -> None:
        self.max_workers_total = 0
        self.initialized = 0.0
        self.submitted = 0
        self.cancelled = 0
        self.rejected_shutdown = 0
        self.rejected_broken = 0
        self.wait = [0.0] * (len(layout.wait_bounds) + 1)
        self.wait_sum = 0.0
        self.completed = [0.0] * (len(layout.duration_bounds) + 1)
        self.completed_sum = 0.0
        self.failed = [0.0] * (len(layout.duration_bounds) + 1)
        self.failed_sum = 0.0
        self.busy = 0.0
        self.running = 0
        self.queued = 0
        self.workers: int | None = None
        self.workers_max: int | None = None
        self.oldest_queued_age = 0.0
        self.oldest_running_age = 0.0

    def add(self, other: Totals) -> None:
        """Add ``other`` into this one (gauges add up too; ages take the oldest)."""
        self.max_workers_total += other.max_workers_total
        self.initialized += other.initialized
        self.submitted += other.submitted
        self.cancelled += other.cancelled
        self.rejected_shutdown += other.rejected_shutdown
        self.rejected_broken += other.rejected_broken
        self.wait = list(map(add, self.wait, other.wait))
        self.wait_sum += other.wait_sum
        self.completed = list(map(add, self.completed, other.completed))
        self.completed_sum += other.completed_sum
        self.failed = list(map(add, self.failed, other.failed))
        self.failed_sum += other.failed_sum
        self.busy += other.busy
        self.running += other.running
        self.queued += other.queued
        self.workers = _add_known(self.workers, other.workers)
        self.workers_max = _add_known(self.workers_max, other.workers_max)
        self.oldest_queued_age = max(self.oldest_queued_age, other.oldest_queued_age)
        self.oldest_running_age = max(self.oldest_running_age, other.oldest_running_age)

    def retire(self) -> Totals:
        """Return the counters alone: what stays exported once an instance is gone."""
        kept = Totals.__new__(Totals)
        for name in Totals.__slots__:
            value = getattr(self, name)
            setattr(kept, name, value[:] if isinstance(value, list) else value)
        kept.running = kept.queued = 0
        kept.workers = 0 if self.workers is not None else None
        kept.workers_max = 0 if self.workers_max is not None else None
        kept.oldest_queued_age = kept.oldest_running_age = 0.0
        return kept

    def stats(self, executor_id: str, executor_type: str, layout: Layout) -> ExecutorStats:
        """Freeze into the public snapshot type."""
        return ExecutorStats(
            executor_id=executor_id,
            executor_type=executor_type,
            max_workers_total=self.max_workers_total,
            initialized_workers=round(self.initialized),
            submitted=self.submitted,
            queued=self.queued,
            running=self.running,
            completed=round(sum(self.completed)),
            failed=round(sum(self.failed)),
            cancelled=self.cancelled,
            rejected_shutdown=self.rejected_shutdown,
            rejected_broken=self.rejected_broken,
            workers=self.workers,
            workers_max=self.workers_max,
            busy_seconds=self.busy,
            oldest_queued_age=self.oldest_queued_age,
            oldest_running_age=self.oldest_running_age,
            wait=_histogram(layout.wait_bounds, self.wait, self.wait_sum),
            completed_duration=_histogram(
                layout.duration_bounds, self.completed, self.completed_sum
            ),
            failed_duration=_histogram(layout.duration_bounds, self.failed, self.failed_sum),
        )


def _add_known(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _histogram(
    bounds: tuple[float, ...], buckets: Sequence[float], total: float
) -> HistogramStats:
    return HistogramStats(bounds, tuple(round(c) for c in itertools.accumulate(buckets)), total)


class ExecutorState:
    """Everything recorded for one executor instance.

    Submitting threads count submissions in slots of their own (``submitters``) and
    workers write only to theirs; ``cancelled``, ``abandoned`` and the rejection counts
    change under ``lock``, off the hot path.  ``pending`` holds the calls not settled
    yet, in submission order: the oldest-queued age is read from it, and the calls that
    ended without starting are found in it.
    """

    def __init__(
        self,
        executor_id: str,
        executor_type: str,
        layout: Layout,
        slots: SlotSource,
        *,
        knows_workers: bool,
        live_workers: Callable[[], int] | None = None,
    ) -> None:
        self.executor_id = executor_id
        self.executor_type = executor_type
        self.layout = layout
        self.slots = slots
        self.knows_workers = knows_workers
        self._live_workers = live_workers
        self.lock = threading.Lock()
        self.submitters = ThreadSlots(SUBMITTER_WIDTH)
        self.cancelled = 0
        self.abandoned = 0  # failed without starting, as the submitting side saw it
        self.rejected_shutdown = 0
        self.rejected_broken = 0
        self.max_workers: int | None = None
        self.max_workers_total = 0
        self.live = True
        #: Set when the owning executor is gone: the state is folded once quiescent.
        self.closed = False
        #: Each call not started yet -> its future, in submission order (process pools
        #: key theirs by future).
        self.pending: dict[Any, Any] = {}
        #: Submissions counted under the pool's own lock (a thread pool on known
        #: internals), beside those counted in ``submitters``.
        self.submitted = 0
        #: Sweep from the submitting side when the pending set grows past this.
        self.sweep_at = _SWEEP_MIN

    # -- submitting side -------------------------------------------------------------

    def add_max_workers(self, max_workers: int | None) -> None:
        """Record the size of the pool (once per pool instance)."""
        with self.lock:
            self.max_workers = max_workers
            self.max_workers_total += max_workers or 0

    def rejected(self, exc: BaseException) -> None:
        """Count a refused submission (``BrokenExecutor`` or a shutdown RuntimeError)."""
        with self.lock:
            if isinstance(exc, BrokenExecutor):
                self.rejected_broken += 1
            else:
                self.rejected_shutdown += 1

    def sweep(self) -> None:
        """Settle the pending calls that ended without starting.

        Those are cancelled (``cancel()``, ``shutdown(cancel_futures=True)``) or failed
        by the executor itself (a broken pool).  Finding them here, at read time and now
        and then from the submitting side, saves a future callback on every task.
        """
        with self.lock:
            pending = self.pending
            # list(dict) is one atomic copy (list(dict.items()) is not: making each pair
            # may run the garbage collector, and with it any thread); the dict changes
            # under us meanwhile, and a call leaves it when it starts (the pop below tells
            # who took it).  A done future whose call has not started never starts (the
            # stdlib skips it).
            ended = []
            for call in list(pending):
                future = pending.get(call)
                if future is not None and not call.started and future.done():
                    ended.append((call, future))
            for call, future in ended:
                if pending.pop(call, None) is not None:
                    if future.cancelled():
                        self.cancelled += call.n
                    else:
                        self.abandoned += call.n
            self.sweep_at = max(_SWEEP_MIN, 2 * len(pending))

    def shut_down(self) -> None:
        self.live = False

    def unsettled(self) -> bool:
        """Whether some call is not accounted for yet (then the state is not retired)."""
        return bool(self.pending)

    # -- reading ---------------------------------------------------------------------

    def read(self, now: float) -> Totals:
        """Return this instance's numbers at time ``now`` (``time.monotonic()``)."""
        self.sweep()
        # Read in the order things happen to a task, so that no state is seen twice:
        # settled counters, then worker slots (starts, ends), then submissions last.
        with self.lock:
            cancelled = self.cancelled
            abandoned = self.abandoned
            rejected_shutdown = self.rejected_shutdown
            rejected_broken = self.rejected_broken
            max_workers_total = self.max_workers_total
            max_workers = self.max_workers
        layout = self.layout
        slots = self.slots.snapshot()
        t = Totals(layout)
        width = layout.width
        summed = [0.0] * width
        in_flight = 0.0
        oldest_start = 0.0
        w, c, f = layout.wait, layout.completed, layout.failed
        for slot in slots:
            summed = list(map(add, summed, slot))
            # A slot runs one item at a time (nested inline tasks aside): it is busy when
            # it shows more starts than ends, and RUN_START is then that item's start.
            start = slot[RUN_START]
            if start > 0.0 and sum(slot[w:c]) > sum(slot[c:width]) - slot[ABANDONED]:
                in_flight += max(0.0, now - start)
                if oldest_start == 0.0 or start < oldest_start:
                    oldest_start = start
        t.wait = summed[w:c]
        t.completed = summed[c:f]
        t.failed = summed[f:width]
        t.wait_sum = summed[WAIT_SUM]
        t.completed_sum = summed[COMPLETED_SUM]
        t.failed_sum = summed[FAILED_SUM]
        t.initialized = summed[INITIALIZED]
        t.busy = t.completed_sum + t.failed_sum + in_flight
        t.oldest_running_age = max(0.0, now - oldest_start) if oldest_start else 0.0
        started = round(sum(t.wait))
        slot_abandoned = round(summed[ABANDONED])
        ended = round(sum(t.completed) + sum(t.failed)) - slot_abandoned
        t.submitted = self.submitted + round(
            sum(slot[SUBMITTED] for slot in self.submitters.snapshot())
        )
        t.cancelled = cancelled
        t.rejected_shutdown = rejected_shutdown
        t.rejected_broken = rejected_broken
        t.max_workers_total = max_workers_total
        # Failed without starting: duration 0, so the first bucket.
        t.failed[0] += abandoned
        t.running = max(0, started - ended)
        t.queued = max(0, t.submitted - started - t.cancelled - abandoned - slot_abandoned)
        t.oldest_queued_age = self._oldest_queued_age(now, slots) if t.queued else 0.0
        if self.knows_workers:
            t.workers = self._live_workers() if self._live_workers else 0
        if max_workers is not None:
            t.workers_max = max_workers if self.live else 0
        return t

    def _oldest_queued_age(self, now: float, slots: list[list[float]]) -> float:
        # Thread tasks flag their start; process pools override this from the slots.
        call: Call
        for call in list(self.pending):  # list(dict) is one atomic copy
            if not call.started:
                return max(0.0, now - call.t_submit)
        return 0.0

    def stats(self, now: float) -> ExecutorStats:
        """Return the public snapshot of this instance."""
        return self.read(now).stats(self.executor_id, self.executor_type, self.layout)

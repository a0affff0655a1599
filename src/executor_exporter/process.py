"""ProcessPoolExecutor: the stdlib process pool, instrumented, numbers true in the parent.

How the numbers reach the parent (which serves ``/metrics``) without a message per task:

* every worker writes starts and ends into its own slot of a shared-memory block (see
  ``_shared`` and ``_child``); the parent sums the slots when scraped;
* a worker marks each call it accounted for in the block's done ring, so when a future
  ends with an exception the parent knows whether a worker ran the call (the task
  raised) or not (its arguments did not pickle, or the pool broke first);
* when the pool breaks, the calls that were cut short are settled once every worker is
  gone, from what their slots show: the item that was running failed, the items of its
  chunk that had not started failed with duration 0.

Users get the stdlib's own futures, so cancel(), running() and the rest are the stdlib's.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from concurrent.futures.process import BrokenProcessPool
from time import monotonic
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from ._child import WorkerBoot, run_chunk
from ._layout import (
    ABANDONED,
    CHUNK_BASE,
    FAILED_SUM,
    OWNER,
    RUN_SEQ,
    RUN_START,
    SUBMITTED,
    Layout,
)
from ._shared import SharedSlots
from ._state import ExecutorState
from .exporter import ExecutorExporter, exporter_options, type_name
from .stats import ExecutorStats

__all__ = ["ProcessPoolExecutor"]

_T = TypeVar("_T")


# A call not settled yet, as the pending set holds it under its future: (sequence
# number, items, submission time).  Made on every submit, so a plain tuple: it runs no
# Python code to make, and the garbage collector stops tracking it after one pass.
_Call = tuple[int, int, float]

# The states in which a future has run, or is running, its done callbacks.
_SETTLED = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)

# The stdlib's submit, called without building a super() object on every call.
_std_submit = concurrent.futures.ProcessPoolExecutor.submit


class _ProcessState(ExecutorState):
    """ExecutorState of a process pool: shared-memory slots, settling broken calls."""

    def __init__(self, executor_id: str, layout: Layout, slots: SharedSlots) -> None:
        super().__init__(
            executor_id,
            type_name(concurrent.futures.ProcessPoolExecutor),
            layout,
            slots,
            knows_workers=True,
            live_workers=slots.live,
        )
        self.shared = slots
        self.pending: dict[Future[Any], _Call] = {}
        self.broken: list[tuple[_Call, float]] = []
        #: Every future's done callback: one bound method, made once.
        self.settle = self._settle

    def watch(self, future: Future[Any], seq: int, n: int, t_submit: float) -> None:
        """Count a call the stdlib accepted and settle it when its future ends."""
        self.pending[future] = (seq, n, t_submit)
        self.submitters.get()[SUBMITTED] += n
        # add_done_callback() without the future's lock, which would cost more than the
        # rest of this method: if the future ended meanwhile, its callbacks may have run
        # before ours was appended, so it is settled here too (settle() acts once).
        future._done_callbacks.append(self.settle)  # type: ignore[attr-defined]
        if future._state in _SETTLED:
            self.settle(future)

    def _settle(self, future: Future[Any]) -> None:
        """Future callback: settle the call if no worker accounted for it."""
        call = self.pending.pop(future, None)
        if call is None:
            return  # settled already (see watch)
        # A done future's fields are final: read without its lock, which would cost more
        # than the rest of this callback.  The names have not changed since 3.2; should
        # they, every settling test in test_process fails.
        exc = future._exception
        if exc is None:
            if future._state != FINISHED:
                with self.lock:
                    self.cancelled += call[1]
            return
        seq, n, _ = call
        if self.shared.mark(seq) >= seq:
            return  # a worker recorded every item: it returned, raised, or did not pickle
        with self.lock:
            if isinstance(exc, BrokenProcessPool):
                # Which items a dying worker got to is known once all workers are gone.
                self.broken.append((call, monotonic()))
            else:  # the call never reached a worker (its arguments did not pickle)
                self.abandoned += n

    def unsettled(self) -> bool:
        return bool(self.pending or self.broken)

    def sweep(self) -> None:
        """Settle calls cut short by a broken pool, once no worker can write any more."""
        with self.lock:
            if not self.broken or self.shared.live():
                return
            layout = self.layout
            w, c, f, width = layout.wait, layout.completed, layout.failed, layout.width
            slots = {}
            for i in self.shared.indexes():
                slot = self.shared.slot(i)
                if slot[OWNER]:
                    slots[int(slot[RUN_SEQ])] = slot
            for (seq, n, _), t_break in self.broken:
                # The stdlib fails every pending future as soon as one worker dies; the
                # others may still finish their call before they are terminated.
                mark = self.shared.mark(seq)
                if mark == seq:
                    continue  # a worker accounted for it
                slot = slots.get(seq)
                if slot is None and mark > seq:
                    continue  # reached a worker (a later call ran), which finished it
                started_in_call = 0
                if slot is not None:
                    started = round(sum(slot[w:c]))
                    ended = round(sum(slot[c:width])) - round(slot[ABANDONED])
                    started_in_call = started - round(slot[CHUNK_BASE])
                    if started > ended:  # the item it was running when it died
                        start = slot[RUN_START]
                        elapsed = max(0.0, t_break - start) if start else 0.0
                        slot[f + bisect_left(layout.duration_bounds, elapsed)] += 1.0
                        slot[FAILED_SUM] += elapsed
                        slot[RUN_START] = 0.0
                self.abandoned += n - started_in_call
            self.broken.clear()

    def _oldest_queued_age(self, now: float, slots: list[list[float]]) -> float:
        layout = self.layout
        w, c = layout.wait, layout.completed
        # Items of each call that a worker has started, by the call's sequence number.
        started = {
            int(slot[RUN_SEQ]): round(sum(slot[w:c])) - round(slot[CHUNK_BASE])
            for slot in slots
            if slot[OWNER]
        }
        for seq, n, t_submit in list(self.pending.values()):  # one atomic copy
            if started.get(seq, 0) < n:
                return max(0.0, now - t_submit)
        return 0.0


class _ChunkSubmitter:
    """Lets ``Executor.map`` submit whole chunks through the instrumented path."""

    __slots__ = ("pool",)

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> Future[Any]:
        pool = self.pool
        state = pool._ee_state
        seq = next(pool._ee_seq)
        t_submit = monotonic()
        try:
            future = _std_submit(pool, run_chunk, fn, seq, t_submit, chunk)
        except RuntimeError as exc:  # shutdown, or BrokenProcessPool
            state.rejected(exc)
            raise
        state.watch(future, seq, len(chunk), t_submit)
        return future


def _chunks(
    iterables: tuple[Iterable[Any], ...], size: int
) -> Iterator[tuple[tuple[Any, ...], ...]]:
    it = zip(*iterables)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _flatten(results: Iterator[list[Any]]) -> Iterator[Any]:
    for chunk in results:
        chunk.reverse()  # pop from the end: each result is released once yielded
        while chunk:
            yield chunk.pop()


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """A :class:`concurrent.futures.ProcessPoolExecutor` that exports its metrics.

    Takes every argument of the stdlib class of the running Python (``max_tasks_per_child``
    from 3.11), plus ``executor_id`` (alias ``exporter_id``) and the keyword arguments of
    :class:`~executor_exporter.ExecutorExporter`.  Tasks and initializers run in the
    children; every number is true in this (the parent) process.  ``submit`` and ``map``
    hand out the stdlib's own futures.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        executor_id: str | None = None,
        exporter_id: str | None = None,
        registry: CollectorRegistry | None = None,
        wait_buckets: Iterable[float] | None = None,
        duration_buckets: Iterable[float] | None = None,
    ) -> None:
        name, layout = exporter_options(
            executor_id, exporter_id, registry, wait_buckets, duration_buckets
        )
        extra = {} if max_tasks_per_child is None else {"max_tasks_per_child": max_tasks_per_child}
        boot = WorkerBoot(initializer, initargs, layout)
        # The stdlib validates every argument, in its own order and words (a bad
        # initializer is handed over as it is for that), and picks the context; nothing
        # is exported until then.
        usable = initializer is None or callable(initializer)
        super().__init__(
            max_workers,
            mp_context,
            boot if usable else initializer,
            () if usable else initargs,
            **extra,
        )
        ctx = getattr(self, "_mp_context", None) or multiprocessing.get_context()
        size: int = self._max_workers  # type: ignore[attr-defined]
        # Room for a replacement worker starting while the one it replaces exits.
        capacity = 2 * size + 1
        # Entries are reused every `ring` calls: that must exceed how far concurrent
        # submitters can reorder calls (a few), nothing more; see SharedSlots.mark.
        ring = max(1024, 8 * size)
        slots = SharedSlots(ctx, layout, capacity, ring)
        boot.raw, boot.lock, boot.capacity, boot.ring = slots.raw, slots.lock, capacity, ring
        self._ee_state = state = _ProcessState(name, layout, slots)
        self._ee_seq = itertools.count(1)  # 0 would match the zeroed done ring
        state.add_max_workers(size)
        self._ee_exporter = ExecutorExporter._for_state(self, state, registry)

    @property
    def executor_id(self) -> str:
        """The ``executor`` label value."""
        return self._ee_state.executor_id

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Like the stdlib's ``submit``, recorded; returns the stdlib's own future."""
        # _ChunkSubmitter.submit does the same for map chunks; kept apart, as one frame,
        # because a shared helper taking *args costs ~2k instructions per task (~1%).
        state = self._ee_state
        seq = next(self._ee_seq)
        t_submit = monotonic()
        # Sent in the place of fn: the workers' _CallItem makes it a recorded call of fn.
        call: Any = (fn, seq, t_submit)
        try:
            future: Future[_T] = _std_submit(self, call, *args, **kwargs)
        except RuntimeError as exc:  # shutdown, or BrokenProcessPool
            state.rejected(exc)
            raise
        state.watch(future, seq, 1, t_submit)
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """Like the stdlib's ``map``: chunks of ``chunksize`` items go to the workers
        together, and every item is still a task in the metrics."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        results = Executor.map(
            _ChunkSubmitter(self),  # type: ignore[arg-type]
            fn,
            _chunks(iterables, chunksize),
            timeout=timeout,
        )
        return _flatten(results)  # type: ignore[arg-type]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Like the stdlib's ``shutdown``; ``workers_max`` drops to 0."""
        self._ee_state.shut_down()
        super().shutdown(wait, cancel_futures=cancel_futures)

    def stats(self) -> ExecutorStats:
        """Return this pool's numbers now, as a frozen :class:`ExecutorStats`."""
        return self._ee_exporter.stats()

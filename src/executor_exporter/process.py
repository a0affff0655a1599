"""ProcessPoolExecutor: the stdlib process pool, instrumented, numbers true in the parent.

How the numbers reach the parent (which serves ``/metrics``) without a message per task:

* every worker writes starts and ends into its own slot of a shared-memory block (see
  ``_shared`` and ``_child``); the parent sums the slots when scraped;
* a call's outcome comes back as a value (``_child.Outcome``), so an exception on the
  stdlib's future means that no worker ran the call to its end; the user gets a future
  of ours, resolved from the stdlib's one;
* when the pool breaks, the calls that were cut short are settled once every worker is
  gone, from what their slots show: the item that was running failed, the items of its
  chunk that had not started failed with duration 0.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from time import monotonic
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from ._child import Call, Outcome, WorkerBoot
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
from .exporter import ExecutorExporter, make_layout, resolve_id, type_name
from .stats import ExecutorStats

__all__ = ["ProcessPoolExecutor"]

_T = TypeVar("_T")


class _ProcessFuture(Future[Any]):
    """The future handed to the user, mirroring the stdlib's one (``inner``)."""

    _ee_inner: Future[Any] | None = None

    def cancel(self) -> bool:
        inner = self._ee_inner
        if inner is None:
            return super().cancel()
        # Cancelling the inner future cancels this one through _Pending.inner_done.
        return inner.cancel() and super().cancel()

    def running(self) -> bool:
        # The stdlib marks a future running once it is in the call queue; so do we.
        inner = self._ee_inner
        return super().running() or (inner is not None and not self.done() and inner.running())


class _Pending:
    """Parent side of one call: what the pending set holds until the call is done."""

    __slots__ = ("n", "outer", "seq", "state", "t_submit")

    # Not swept by ExecutorState.sweep: inner_done settles every process call.
    started = False
    future = None

    def __init__(self, state: _ProcessState, seq: int, n: int, t_submit: float) -> None:
        self.state = state
        self.seq = seq
        self.n = n
        self.t_submit = t_submit
        self.outer = _ProcessFuture()

    def inner_done(self, inner: Future[Any]) -> None:
        state, outer = self.state, self.outer
        state.pending.pop(self, None)
        if inner.cancelled():
            with state.lock:
                state.cancelled += self.n
            Future.cancel(outer)
            outer.set_running_or_notify_cancel()
            return
        exc = inner.exception()
        if exc is None:
            outcome: Outcome = inner.result()
            if outcome.ok:
                outer.set_result(outcome.value)
            else:
                outer.set_exception(outcome.value)
            return
        with state.lock:
            if isinstance(exc, BrokenProcessPool):
                # Which items a dying worker got to is known once all workers are gone.
                state.broken.append((self, monotonic()))
            else:  # the call never reached a worker (its arguments did not pickle)
                state.abandoned += self.n
        outer.set_exception(exc)


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
        self.broken: list[tuple[_Pending, float]] = []

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
            for call, t_break in self.broken:
                slot = slots.get(call.seq)
                started_in_call = 0
                if slot is not None:
                    started = round(sum(slot[w:c]))
                    ended = round(sum(slot[c:width])) - round(slot[ABANDONED])
                    started_in_call = started - round(slot[CHUNK_BASE])
                    if started > ended:  # the item it was running when it died
                        start = slot[RUN_START]
                        elapsed = max(0.0, t_break - start) if start else 0.0
                        slot[f + _bucket(layout.duration_bounds, elapsed)] += 1.0
                        slot[FAILED_SUM] += elapsed
                        slot[RUN_START] = 0.0
                self.abandoned += call.n - started_in_call
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
        for _ in range(3):
            try:
                for call in self.pending:
                    if started.get(call.seq, 0) < call.n:
                        return max(0.0, now - float(call.t_submit))
                return 0.0
            except RuntimeError:  # the dict changed size while we walked it: again
                continue
        return 0.0  # pragma: no cover - three concurrent resizes in a row


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    from bisect import bisect_left

    return bisect_left(bounds, value)


class _ChunkSubmitter:
    """Lets ``Executor.map`` submit whole chunks through the instrumented path."""

    __slots__ = ("pool",)

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> Future[Any]:
        return self.pool._ee_submit(fn, chunk, None, len(chunk), chunk=True)


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
    children; every number is true in this (the parent) process.  ``submit`` returns a
    future of this module that mirrors the stdlib's one (cancel, running, result).
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
        name = resolve_id(executor_id, exporter_id)
        layout = make_layout(wait_buckets, duration_buckets)
        extra = {} if max_tasks_per_child is None else {"max_tasks_per_child": max_tasks_per_child}
        boot = WorkerBoot(initializer, tuple(initargs), layout, 0)
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
        # Room for a replacement worker starting while the one it replaces exits.
        size: int = self._max_workers  # type: ignore[attr-defined]
        capacity = 2 * size + 1
        slots = SharedSlots(ctx, layout, capacity)
        boot.raw, boot.lock, boot.capacity = slots.raw, ctx.Lock(), capacity
        self._ee_state = state = _ProcessState(name, layout, slots)
        self._ee_seq = itertools.count()
        state.add_max_workers(size)
        self._ee_exporter = ExecutorExporter._for_state(self, state, registry)

    @property
    def executor_id(self) -> str:
        """The ``executor`` label value."""
        return self._ee_state.executor_id

    def _ee_submit(
        self,
        fn: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any] | None,
        n: int,
        *,
        chunk: bool,
    ) -> Future[Any]:
        state = self._ee_state
        seq = next(self._ee_seq)
        t_submit = monotonic()
        record = _Pending(state, seq, n, t_submit)
        pending = state.pending
        # In the set before the stdlib sees the call, since it may end at once.
        pending[record] = None
        try:
            inner = super().submit(Call(fn, args, kwargs, seq, t_submit, chunk))
        except BaseException as exc:
            pending.pop(record, None)
            if isinstance(exc, RuntimeError):  # shutdown, or BrokenProcessPool
                state.rejected(exc)
            raise
        state.submitters.get()[SUBMITTED] += n
        outer = record.outer
        outer._ee_inner = inner
        inner.add_done_callback(record.inner_done)
        return outer

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Like the stdlib's ``submit``, recorded; returns a future mirroring the stdlib's."""
        return self._ee_submit(fn, args, kwargs or None, 1, chunk=False)

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

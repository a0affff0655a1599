"""What runs inside a process pool's workers.

Everything here reaches the children by pickle (under ``spawn`` and ``forkserver`` too),
so it is module-level.  A worker records each item's wait and duration straight into its
shared-memory slot: no message to the parent per item, and the numbers are visible to
the parent's scrape while the item still runs.  Results and exceptions travel exactly as
with the stdlib: the user gets the stdlib's own future.

When a call (a task, or a ``map`` chunk) has been accounted for, the worker writes its
sequence number into the *done ring*.  That is how the parent tells, for a future that
ends with an exception, whether a worker ran the call (the task raised, or its result
did not pickle) or not (its arguments did not pickle, or the pool broke first).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from multiprocessing.util import Finalize
from time import monotonic
from typing import Any

from ._layout import (
    ABANDONED,
    CHUNK_BASE,
    COMPLETED_SUM,
    FAILED_SUM,
    INITIALIZED,
    RUN_SEQ,
    RUN_START,
    WAIT_SUM,
    Layout,
)
from ._shared import Slot, claim, doubles, release

# This worker's (slot, layout, done ring); set by WorkerBoot, None in the parent.
_worker: tuple[Slot, Layout, Slot] | None = None


class WorkerBoot:
    """The pool's initializer: claims a slot, runs the user's initializer, counts it.

    The parent fills in ``raw`` and ``lock`` after the stdlib constructor has chosen the
    multiprocessing context, before any worker is started.
    """

    __slots__ = ("capacity", "initargs", "initializer", "layout", "lock", "raw", "ring")

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: Any,
        layout: Layout,
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs  # as given: the stdlib unpacks them only to call
        self.layout = layout
        self.capacity = 0
        self.ring = 0
        self.raw: Any = None
        self.lock: Any = None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in WorkerBoot.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(WorkerBoot.__slots__, state):
            setattr(self, name, value)

    def __call__(self) -> None:
        global _worker
        layout = self.layout
        claimed = claim(self.raw, self.lock, layout, self.capacity)
        if claimed is None:  # pragma: no cover - capacity is twice the pool size
            slot: Slot = [0.0] * layout.width  # run, unrecorded, rather than fail
        else:
            index, slot = claimed
            # Runs at a normal exit (max_tasks_per_child, shutdown), not when killed.
            Finalize(None, release, (self.raw, self.lock, layout, index), exitpriority=10)
        start = self.capacity * layout.width
        _worker = (slot, layout, doubles(self.raw)[start : start + self.ring])
        if self.initializer is not None:
            self.initializer(*self.initargs)  # raising breaks the pool, as in the stdlib
        slot[INITIALIZED] += 1.0


def run_call(
    fn: Callable[..., Any],
    seq: int,
    t_submit: float,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run one submitted call in a worker, recorded."""
    return _run(fn, seq, t_submit, (args,), kwargs, False)


def run_chunk(
    fn: Callable[..., Any], seq: int, t_submit: float, chunk: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """Run a ``map`` chunk in a worker, recorded item by item; stops at the first error
    like the stdlib."""
    results: list[Any] = _run(fn, seq, t_submit, chunk, {}, True)
    return results


def _run(
    fn: Callable[..., Any],
    seq: int,
    t_submit: float,
    items: Sequence[tuple[Any, ...]],
    kwargs: dict[str, Any],
    chunk: bool,
) -> Any:
    worker = _worker
    if worker is None:  # pragma: no cover - not started by our pool: just run it
        return [fn(*a, **kwargs) for a in items] if chunk else fn(*items[0], **kwargs)
    slot, layout, ring = worker
    wait_base, wait_bounds = layout.wait, layout.wait_bounds
    ok_base, fail_base, bounds = layout.completed, layout.failed, layout.duration_bounds
    # Starts are counted by the wait histogram alone; should this worker die, the parent
    # tells how many items of this call started from it and CHUNK_BASE.  Each event is a
    # single store, so a death at any point leaves a consistent slot.  RUN_START is the
    # start of the item running now when the slot shows more starts than ends; it is
    # not cleared between items.
    slot[CHUNK_BASE] = sum(slot[wait_base:ok_base])
    slot[RUN_SEQ] = float(seq)
    results: list[Any] = []
    append = results.append
    t_start = monotonic()
    for args in items:
        wait = t_start - t_submit
        slot[RUN_START] = t_start
        slot[wait_base + bisect_left(wait_bounds, wait)] += 1.0
        slot[WAIT_SUM] += wait
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            elapsed = monotonic() - t_start
            slot[fail_base + bisect_left(bounds, elapsed)] += 1.0
            slot[FAILED_SUM] += elapsed
            # The rest of the chunk never runs, as in the stdlib: failed, duration 0.
            rest = len(items) - len(results) - 1
            if rest:
                slot[fail_base] += rest
                slot[ABANDONED] += rest
            ring[seq % len(ring)] = float(seq)
            raise
        t_end = monotonic()
        elapsed = t_end - t_start
        slot[ok_base + bisect_left(bounds, elapsed)] += 1.0
        slot[COMPLETED_SUM] += elapsed
        append(result)
        t_start = t_end
    ring[seq % len(ring)] = float(seq)
    return results if chunk else results[0]

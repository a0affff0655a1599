"""What runs inside a process pool's workers.

Everything here reaches the children by pickle (under ``spawn`` and ``forkserver`` too),
so it is module-level.  A worker records each item's wait and duration straight into its
shared-memory slot: no message to the parent per item, and the numbers are visible to
the parent's scrape while the item still runs.  Results and exceptions travel exactly as
with the stdlib: the user gets the stdlib's own future.

A submitted call travels as a tuple ``(fn, seq, t_submit)`` in the place of the stdlib's
function, which the workers' ``_CallItem`` (see below) turns into a recorded call: one
function reference per call to pickle and unpickle, as with the stdlib, not two.  A
``map`` chunk travels as a call of ``run_chunk``, once per chunk.

When a call (a task, or a ``map`` chunk) has been accounted for, the worker writes its
sequence number into the *done ring*.  That is how the parent tells, for a future that
ends with an exception, whether a worker ran the call (the task raised, or its result
did not pickle) or not (its arguments did not pickle, or the pool broke first).
"""

from __future__ import annotations

import concurrent.futures.process
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.util import Finalize
from time import monotonic
from typing import Any

from . import _stdlib
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


class _Worker:
    """This worker process's recording state, unpacked once for the hot path."""

    __slots__ = (
        "bounds",
        "fail_base",
        "ok_base",
        "ring",
        "slot",
        "started",
        "wait_base",
        "wait_bounds",
    )

    def __init__(self, slot: Slot, layout: Layout, ring: Slot) -> None:
        self.slot = slot
        self.ring = ring
        self.wait_base, self.wait_bounds = layout.wait, layout.wait_bounds
        self.ok_base, self.fail_base = layout.completed, layout.failed
        self.bounds = layout.duration_bounds
        # Items this slot has started (its wait count), kept here so that a call need
        # not sum the shared buckets to write CHUNK_BASE.  A reused slot starts from
        # what the previous worker left.
        self.started = round(sum(slot[layout.wait : layout.completed]))


# Set by WorkerBoot; None in the parent.
_worker: _Worker | None = None


class _CallItem(_stdlib.CallItem or object):  # type: ignore[misc]
    """The stdlib's call item, as the workers of our pools unpickle it.

    WorkerBoot installs it as ``concurrent.futures.process._CallItem`` in the worker,
    the name the parent's call items are unpickled by.  Sending the user's function and
    calling ``run_call`` here, instead of sending ``run_call`` with the function as an
    argument, saves a second function reference in every call's pickle: ~6.5k
    instructions in the parent and ~5k in the workers per call, 2.6% of a tiny task's
    cost.  Call items of other pools (ones a task starts in this worker) are unchanged.
    Where the internals are unknown (see ``_stdlib``) nothing is installed and calls
    travel as ``partial(run_call, ...)``.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__ = state
        fn = state["fn"]
        if type(fn) is tuple:  # (fn, seq, t_submit), from ProcessPoolExecutor.submit
            self.fn = partial(run_call, *fn)


class WorkerBoot:
    """The pool's initializer: claims a slot, runs the user's initializer, counts it.

    The parent fills in ``raw`` and ``lock`` after the stdlib constructor has chosen the
    multiprocessing context, before any worker is started.
    """

    __slots__ = (
        "capacity",
        "initargs",
        "initializer",
        "layout",
        "lock",
        "patch_call_item",
        "raw",
        "ring",
    )

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: Any,
        layout: Layout,
        *,
        patch_call_item: bool,
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs  # as given: the stdlib unpacks them only to call
        self.layout = layout
        self.patch_call_item = patch_call_item
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
        _stdlib.forget_parent_wakeups()  # first: nothing else may hang this worker's exit
        layout = self.layout
        claimed = claim(self.raw, self.lock, layout, self.capacity)
        if claimed is None:  # pragma: no cover - capacity is twice the pool size
            slot: Slot = [0.0] * layout.width  # run, unrecorded, rather than fail
        else:
            index, slot = claimed
            # Runs at a normal exit (max_tasks_per_child, shutdown), not when killed.
            Finalize(None, release, (self.raw, self.lock, layout, index), exitpriority=10)
        start = self.capacity * layout.width
        if self.patch_call_item:
            concurrent.futures.process._CallItem = _CallItem  # type: ignore[misc]
        _worker = _Worker(slot, layout, doubles(self.raw)[start : start + self.ring])
        if self.initializer is not None:
            self.initializer(*self.initargs)  # raising breaks the pool, as in the stdlib
        slot[INITIALIZED] += 1.0


def run_call(
    fn: Callable[..., Any], seq: int, t_submit: float, /, *args: Any, **kwargs: Any
) -> Any:
    """Run one submitted call in a worker, recorded."""
    worker = _worker
    if worker is None:  # pragma: no cover - not started by our pool: just run it
        return fn(*args, **kwargs)
    # The chunk loop below, unrolled for one item: most calls are single tasks.
    slot = worker.slot
    t_start = monotonic()
    wait = t_start - t_submit
    slot[CHUNK_BASE] = worker.started
    slot[RUN_SEQ] = float(seq)
    slot[RUN_START] = t_start
    bounds = worker.wait_bounds
    slot[worker.wait_base + (0 if wait <= bounds[0] else bisect_left(bounds, wait))] += 1.0
    slot[WAIT_SUM] += wait
    worker.started += 1
    try:
        result = fn(*args, **kwargs)
    except BaseException:
        elapsed = monotonic() - t_start
        slot[worker.fail_base + bisect_left(worker.bounds, elapsed)] += 1.0
        slot[FAILED_SUM] += elapsed
        worker.ring[seq % len(worker.ring)] = float(seq)
        raise
    elapsed = monotonic() - t_start
    bounds = worker.bounds
    slot[worker.ok_base + (0 if elapsed <= bounds[0] else bisect_left(bounds, elapsed))] += 1.0
    slot[COMPLETED_SUM] += elapsed
    worker.ring[seq % len(worker.ring)] = float(seq)
    return result


def run_chunk(
    fn: Callable[..., Any], seq: int, t_submit: float, chunk: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """Run a ``map`` chunk in a worker, recorded item by item; stops at the first error
    like the stdlib."""
    worker = _worker
    if worker is None:  # pragma: no cover - not started by our pool: just run it
        return [fn(*args) for args in chunk]
    slot, ring = worker.slot, worker.ring
    wait_base, wait_bounds = worker.wait_base, worker.wait_bounds
    ok_base, bounds = worker.ok_base, worker.bounds
    first_wait, first = wait_bounds[0], bounds[0]
    # Starts are counted by the wait histogram alone; should this worker die, the parent
    # tells how many items of this call started from it and CHUNK_BASE.  Each event is a
    # single store, so a death at any point leaves a consistent slot.  RUN_START is the
    # start of the item running now when the slot shows more starts than ends; it is
    # not cleared between items.
    slot[CHUNK_BASE] = worker.started
    slot[RUN_SEQ] = float(seq)
    results: list[Any] = []
    append = results.append
    t_start = monotonic()
    try:
        for args in chunk:
            wait = t_start - t_submit
            slot[RUN_START] = t_start
            slot[wait_base + (0 if wait <= first_wait else bisect_left(wait_bounds, wait))] += 1.0
            slot[WAIT_SUM] += wait
            result = fn(*args)
            t_end = monotonic()
            elapsed = t_end - t_start
            slot[ok_base + (0 if elapsed <= first else bisect_left(bounds, elapsed))] += 1.0
            slot[COMPLETED_SUM] += elapsed
            append(result)
            t_start = t_end
    except BaseException:
        elapsed = monotonic() - t_start
        slot[worker.fail_base + bisect_left(bounds, elapsed)] += 1.0
        slot[FAILED_SUM] += elapsed
        # The rest of the chunk never runs, as in the stdlib: failed, duration 0.
        rest = len(chunk) - len(results) - 1
        if rest:
            slot[worker.fail_base] += rest
            slot[ABANDONED] += rest
        worker.started += len(results) + 1
        ring[seq % len(ring)] = float(seq)
        raise
    worker.started += len(results)
    ring[seq % len(ring)] = float(seq)
    return results

"""The in-process task wrapper: what a proxied executor runs in place of each call.

Thread pools run it too where they cannot queue a ``WorkItem`` of their own (unknown
internals, or ``EXECUTOR_EXPORTER_FALLBACK=1``; see ``_work_item``), and so does the
sub-interpreter pool, inside its worker context.

This is the per-task hot path.  It is written flat on purpose: a few additions into the
worker's own slot, no lock, no prometheus_client object; the numbers are summed when a
scrape asks for them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import Future
from time import monotonic
from typing import Any

from ._layout import COMPLETED_SUM, FAILED_SUM, RUN_START, SUBMITTED, WAIT_SUM
from ._slots import ThreadSlots
from ._state import ExecutorState


class ThreadTask:
    """Wraps one submitted call; run by a worker thread in place of the call."""

    __slots__ = ("args", "fn", "kwargs", "started", "state", "t_submit")

    # A task is one item (a process-pool map chunk may be many).
    n = 1

    def __init__(
        self,
        state: ExecutorState,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.fn: Callable[..., Any] | None = fn
        self.args = args
        self.kwargs = kwargs
        self.state = state
        self.started = False
        self.t_submit = monotonic()

    def __call__(self) -> Any:
        t_start = monotonic()
        state = self.state
        layout = state.layout
        slots: ThreadSlots = state.slots  # type: ignore[assignment]
        try:  # slots.get(), inline
            slot: list[float] = slots.local.slot
        except AttributeError:
            slot = slots.get()
        # Order matters: flag, count the start, then leave the pending set, so that the
        # task is always visible somewhere (see submit_task and the collector's retiring).
        self.started = True
        wait = t_start - self.t_submit
        bounds = layout.wait_bounds
        slot[layout.wait + (0 if wait <= bounds[0] else bisect_left(bounds, wait))] += 1.0
        slot[WAIT_SUM] += wait
        state.pending.pop(self, None)
        fn, args, kwargs = self.fn, self.args, self.kwargs
        self.fn = None
        self.args = ()
        self.kwargs = {}
        # The future will hold the exception, whose traceback holds this frame and the
        # caller's (3.14's WorkerContext.run holds this task): drop the link, so that
        # reference counting alone frees the lot and, through f_back, the worker thread.
        del self
        # A task run inline inside another task (an executor that runs on the caller's
        # thread) must not hide the outer one's start.
        outer = not slot[RUN_START]
        if outer:
            slot[RUN_START] = t_start
        try:
            result = fn(*args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            elapsed = monotonic() - t_start
            slot[layout.failed + bisect_left(layout.duration_bounds, elapsed)] += 1.0
            slot[FAILED_SUM] += elapsed
            if outer:
                slot[RUN_START] = 0.0
            # Leave the traceback as the stdlib would show it: without this frame.  A bare
            # raise re-raises without adding a frame (3.11+; 3.10 keeps one extra frame).
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _CALL_CODE:
                exc.__traceback__ = tb.tb_next
            del tb  # it refers to this frame: a cycle
            raise
        elapsed = monotonic() - t_start
        bounds = layout.duration_bounds
        i = 0 if elapsed <= bounds[0] else bisect_left(bounds, elapsed)
        slot[layout.completed + i] += 1.0
        slot[COMPLETED_SUM] += elapsed
        if outer:
            slot[RUN_START] = 0.0
        return result


_CALL_CODE = ThreadTask.__call__.__code__


def submit_task(
    state: ExecutorState,
    submit: Callable[[ThreadTask], Future[Any]],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Future[Any]:
    """Submit ``fn(*args, **kwargs)`` through ``submit``, recording it in ``state``.

    No future callback is added: that alone would cost more than the rest of the
    recording.  Tasks that end without starting (cancelled, or failed by a broken pool)
    are found by :meth:`ExecutorState.sweep` among the pending ones.
    """
    task = ThreadTask(state, fn, args, kwargs)
    try:
        future = submit(task)
    except RuntimeError as exc:  # shutdown, or BrokenExecutor (a subclass)
        state.rejected(exc)
        raise
    pending = state.pending
    pending[task] = future
    # The task may have started (and left the pending set) before it was added.
    if task.started:
        pending.pop(task, None)
    elif len(pending) > state.sweep_at:
        state.sweep()
    state.submitters.get()[SUBMITTED] += 1.0
    return future

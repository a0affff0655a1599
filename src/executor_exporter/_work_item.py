"""The thread pool's work item: the stdlib's own ``run``, recorded (known internals).

``ThreadPoolExecutor.submit`` queues one of these where the stdlib queues its
``_WorkItem``, and the worker thread runs it with the stdlib's very ``_WorkItem.run``.  So
cancellation, results, exceptions and tracebacks are the stdlib's to the frame, and no
wrapper stands between the worker and the call.

To that ``run`` the item is its own future: ``run`` calls
``set_running_or_notify_cancel()`` when the call starts and ``set_result()`` or
``set_exception()`` when it ends, and the item records each into the worker's slot before
it passes the call on to the real future, the one the caller holds.  So whoever sees a
future done sees its task recorded.  ``future`` points back at the item until the call
ends (or is cancelled, or failed by a broken pool): a short cycle, broken there, so that
reference counting alone frees the item as it frees the stdlib's.

An item that never starts (cancelled, or failed by a broken pool) lets go of its call at
once but stays in the pending set, where :meth:`ExecutorState.sweep` finds and counts it,
as it finds a ``ThreadTask``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import Future
from time import monotonic
from typing import Any

from . import _stdlib
from ._layout import COMPLETED_SUM, FAILED_SUM, RUN_START, WAIT_SUM
from ._slots import ThreadSlots
from ._state import ExecutorState


class _RecordingItem:
    """What both item shapes share: the future's side, which records."""

    __slots__ = ("future", "real", "slot", "started", "state", "t_submit")

    future: _RecordingItem | None
    real: Future[Any]
    slot: list[float]
    started: bool
    state: ExecutorState
    t_submit: float

    # One call is one task (a process-pool map chunk may be many).
    n = 1

    #: The stdlib's ``_WorkItem.run``, which takes the item for its own.
    run = _stdlib.work_item_run

    #: The slots that hold the call (and the caller's objects).
    _CALL: tuple[str, ...] = ()

    def _let_go(self) -> None:
        """Drop the call of an item that will never run, as the stdlib's item is dropped:
        the item itself stays in the pending set, where the sweep finds it."""
        self.future = None
        for name in self._CALL:
            delattr(self, name)

    def set_running_or_notify_cancel(self) -> bool:
        if not self.real.set_running_or_notify_cancel():
            self._let_go()  # cancelled while queued
            return False
        t_start = monotonic()
        state = self.state
        layout = state.layout
        slots: ThreadSlots = state.slots  # type: ignore[assignment]
        try:  # ThreadSlots.get(), inline: a frame is a tenth of what recording costs
            slot: list[float] = slots.local.slot
        except AttributeError:
            slot = slots.get()
        self.slot = slot
        # Order matters: flag, count the start, then leave the pending set, so that the
        # call is always visible somewhere (see ExecutorState.read and sweep).  A worker
        # thread runs its pool's items one at a time: RUN_START is this call's.
        self.started = True
        wait = t_start - self.t_submit
        bounds = layout.wait_bounds
        slot[layout.wait + (0 if wait <= bounds[0] else bisect_left(bounds, wait))] += 1.0
        slot[WAIT_SUM] += wait
        slot[RUN_START] = t_start
        state.pending.pop(self, None)
        return True

    def set_result(self, result: Any) -> None:
        slot = self.slot
        elapsed = monotonic() - slot[RUN_START]
        layout = self.state.layout
        bounds = layout.duration_bounds
        i = 0 if elapsed <= bounds[0] else bisect_left(bounds, elapsed)
        slot[layout.completed + i] += 1.0
        slot[COMPLETED_SUM] += elapsed
        slot[RUN_START] = 0.0
        self.future = None
        self.real.set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if self.started:
            slot = self.slot
            elapsed = monotonic() - slot[RUN_START]
            layout = self.state.layout
            slot[layout.failed + bisect_left(layout.duration_bounds, elapsed)] += 1.0
            slot[FAILED_SUM] += elapsed
            slot[RUN_START] = 0.0
            self.future = None
        else:
            # The pool broke (an initializer failed) with the call still queued: failed
            # without starting, as the sweep counts it.
            self._let_go()
        self.real.set_exception(exception)

    def cancel(self) -> bool:
        # shutdown(cancel_futures=True), on the calls still queued.
        self._let_go()
        return self.real.cancel()


class WorkItem(_RecordingItem):
    """A queued call, as 3.10-3.13's ``_WorkItem(future, fn, args, kwargs)`` holds it."""

    __slots__ = ("args", "fn", "kwargs")
    _CALL = __slots__

    def __init__(
        self,
        state: ExecutorState,
        real: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.state = state
        self.real = real
        self.future = self
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.started = False
        self.t_submit = monotonic()


class TaskWorkItem(_RecordingItem):
    """A queued call, as 3.14's ``_WorkItem(future, task)`` holds it: the task is what
    the pool's ``resolve_task`` made of the call, run by the worker's context."""

    __slots__ = ("task",)
    _CALL = __slots__

    def __init__(self, state: ExecutorState, real: Future[Any], task: Any) -> None:
        self.state = state
        self.real = real
        self.future = self
        self.task = task
        self.started = False
        self.t_submit = monotonic()

"""InterpreterPoolExecutor (Python 3.14+): the stdlib sub-interpreter pool, instrumented.

Each worker thread of the stdlib pool owns a sub-interpreter; the call and its arguments
cross into it.  So the call itself cannot be wrapped (a wrapper would have to cross too):
the pool's *worker context* is, through the stdlib's own extension point
(``prepare_context``, a public name of 3.14's thread pool).  Timing stays in the worker's
thread, around the context's ``run``: the wait ends, and running begins, when the worker
hands the call to its interpreter.
"""

from __future__ import annotations

import concurrent.futures.interpreter as _interpreter
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from . import _stdlib
from ._layout import INITIALIZED
from ._slots import ThreadSlots
from ._state import ExecutorState
from ._task import ThreadTask, submit_task
from .exporter import ExecutorExporter, exporter_options, type_name
from .stats import ExecutorStats

__all__ = ["InterpreterPoolExecutor"]

_T = TypeVar("_T")

# The slots of the pool being constructed in this thread, for prepare_context(): a
# classmethod the stdlib constructor calls, so it cannot be handed the instance.
_building = threading.local()


class _RecordingContext:
    """Wraps one worker's stdlib context: counts its initialization, times its calls."""

    __slots__ = ("inner", "slots")

    def __init__(self, inner: Any, slots: ThreadSlots) -> None:
        self.inner = inner
        self.slots = slots

    @classmethod
    def make(cls, create: Callable[[], Any], slots: ThreadSlots) -> _RecordingContext:
        """``create_context`` of the stdlib, for one new worker thread."""
        return cls(create(), slots)

    def initialize(self) -> None:
        # Creates the interpreter and runs the user's initializer inside it; raising
        # breaks the pool (BrokenInterpreterPool), as in the stdlib.
        self.inner.initialize()
        self.slots.get()[INITIALIZED] += 1.0

    def finalize(self) -> None:
        self.inner.finalize()

    def run(self, task: ThreadTask) -> Any:
        # The task (see _resolve) records around the interpreter's run of the call.
        task.fn = self.inner.run
        try:
            return task()
        except BaseException as exc:
            # Show the stdlib's traceback: without this frame (ThreadTask drops its own).
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _RUN_CODE:
                exc.__traceback__ = tb.tb_next
            del tb  # it refers to this frame: a cycle
            raise


_RUN_CODE = _RecordingContext.run.__code__


def _resolve(inner: Callable[..., Any], task: ThreadTask, args: Any, kwargs: Any) -> ThreadTask:
    """The stdlib's ``resolve_task``, run by its ``submit`` in the submitting thread.

    ``submit_task`` hands the stdlib a ThreadTask as the callable: the stdlib's resolver
    turns the user's call into what the interpreter runs (refusing what it refuses), and
    the task carries that to the worker's ``_RecordingContext.run``.
    """
    resolved = inner(task.fn, task.args, task.kwargs)
    task.fn, task.args, task.kwargs = None, (resolved,), {}
    return task


class InterpreterPoolExecutor(_interpreter.InterpreterPoolExecutor):
    """A :class:`concurrent.futures.InterpreterPoolExecutor` that exports its metrics.

    Takes every argument of the stdlib class plus ``executor_id`` (alias
    ``exporter_id``) and the keyword arguments of
    :class:`~executor_exporter.ExecutorExporter`.  Behaves exactly like the stdlib
    class: calls and their arguments must cross into each worker's interpreter (pickle
    or be shareable), the initializer runs inside it, and a failing one breaks the pool
    with ``BrokenInterpreterPool``.  Every number is true in this interpreter.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        executor_id: str | None = None,
        exporter_id: str | None = None,
        registry: CollectorRegistry | None = None,
        wait_buckets: Iterable[float] | None = None,
        duration_buckets: Iterable[float] | None = None,
    ) -> None:
        name, layout = exporter_options(
            executor_id, exporter_id, registry, wait_buckets, duration_buckets
        )
        slots = ThreadSlots(layout.width)
        state = ExecutorState(
            name,
            type_name(_interpreter.InterpreterPoolExecutor),
            layout,
            slots,
            knows_workers=True,
            live_workers=slots.live,
        )
        # The stdlib validates every argument in its own order and words; its
        # constructor calls prepare_context() (below), which takes the slots from here.
        _building.slots = slots
        try:
            super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        finally:
            del _building.slots
        self._ee_state = state
        state.add_max_workers(_stdlib.max_workers(self))
        self._ee_exporter = ExecutorExporter._for_state(self, state, registry)

    @classmethod
    def prepare_context(
        cls, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> tuple[Callable[[], Any], Callable[..., Any]]:
        """The stdlib's worker context, wrapped to record (see the module docstring)."""
        create, resolve = super().prepare_context(initializer, initargs)  # type: ignore[arg-type]
        slots: ThreadSlots | None = getattr(_building, "slots", None)
        if slots is None:  # not called by our constructor: nothing to record into
            return create, resolve
        return partial(_RecordingContext.make, create, slots), partial(_resolve, resolve)

    # The methods below repeat ThreadPoolExecutor's on purpose, not from a shared base:
    # a bad call's TypeError names the method's class ("InterpreterPoolExecutor.submit()
    # missing 1 required positional argument"), and those words must be the stdlib's.
    @property
    def executor_id(self) -> str:
        """The ``executor`` label value."""
        return self._ee_state.executor_id

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Like the stdlib's ``submit``, recorded."""
        return submit_task(self._ee_state, super().submit, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Like the stdlib's ``shutdown``; ``workers_max`` drops to 0."""
        self._ee_state.shut_down()
        super().shutdown(wait, cancel_futures=cancel_futures)

    def stats(self) -> ExecutorStats:
        """Return this pool's numbers now, as a frozen :class:`ExecutorStats`."""
        return self._ee_exporter.stats()

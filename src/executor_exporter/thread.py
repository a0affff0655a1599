"""ThreadPoolExecutor: the stdlib thread pool, instrumented."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread as _cf_thread
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from . import _stdlib
from ._layout import INITIALIZED
from ._slots import ThreadSlots
from ._state import ExecutorState
from ._task import submit_task
from ._work_item import TaskWorkItem, WorkItem
from .exporter import ExecutorExporter, exporter_options, type_name
from .stats import ExecutorStats

__all__ = ["ThreadPoolExecutor"]

_T = TypeVar("_T")


class _WorkerInitializer:
    """Runs in each new worker thread: the user's initializer, then the count."""

    __slots__ = ("initargs", "initializer", "slots")

    def __init__(
        self, slots: ThreadSlots, initializer: Callable[..., object] | None, initargs: Any
    ) -> None:
        self.slots = slots
        self.initializer = initializer
        self.initargs = initargs  # as given: the stdlib unpacks them only to call

    def __call__(self) -> None:
        if self.initializer is not None:
            # Raising (bad initargs included) breaks the pool, as in the stdlib.
            self.initializer(*self.initargs)
        self.slots.get()[INITIALIZED] += 1.0


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A :class:`concurrent.futures.ThreadPoolExecutor` that exports its metrics.

    Takes every argument of the stdlib class, positionally or by keyword, plus
    ``executor_id`` (alias ``exporter_id``), the ``executor`` label, and the keyword
    arguments of :class:`~executor_exporter.ExecutorExporter` (``registry``,
    ``wait_buckets``, ``duration_buckets``).  Behaves exactly like the stdlib class;
    from 3.14 it passes any further keyword arguments on to ``prepare_context()``, as
    the stdlib does.
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
        **ctxkwargs: Any,
    ) -> None:
        name, layout = exporter_options(
            executor_id, exporter_id, registry, wait_buckets, duration_buckets
        )
        known = _stdlib.check()
        slots = ThreadSlots(layout.width)
        state = ExecutorState(
            name,
            type_name(concurrent.futures.ThreadPoolExecutor),
            layout,
            slots,
            knows_workers=True,
            live_workers=slots.live,
        )
        # The stdlib validates every argument, in its own order and words (a bad
        # initializer is handed over as it is for that); nothing is exported until then.
        if initializer is None or callable(initializer):
            wrapped, initargs = _WorkerInitializer(slots, initializer, initargs), ()
        else:
            wrapped = initializer
        # ctxkwargs: 3.14's arguments of prepare_context(); refused by the stdlib before.
        super().__init__(max_workers, thread_name_prefix, wrapped, initargs, **ctxkwargs)
        self._ee_state = state
        # Queue work items of our own (see _work_item), or wrap each call in a ThreadTask
        # and submit it through the stdlib's submit (the proxy's path).
        self._ee_items = known and _stdlib.thread_pool_is_known(self)
        state.add_max_workers(_stdlib.max_workers(self))
        self._ee_exporter = ExecutorExporter._for_state(self, state, registry)

    @property
    def executor_id(self) -> str:
        """The ``executor`` label value."""
        return self._ee_state.executor_id

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Like the stdlib's ``submit``, recorded."""
        state = self._ee_state
        if not self._ee_items:
            return submit_task(state, super().submit, fn, args, kwargs)
        # The stdlib's submit, with our item in place of its _WorkItem (see _stdlib for
        # each name).
        with self._shutdown_lock, _stdlib.global_shutdown_lock:
            # The module's _shutdown: set at interpreter exit.
            refused = self._broken or self._shutdown or _cf_thread._shutdown
            if not refused:
                future: Future[_T] = Future()
                if _stdlib.WORK_ITEM_TAKES_TASK:
                    task = self._resolve_work_item_task(fn, args, kwargs)  # type: ignore[attr-defined, unused-ignore]
                    item: Any = TaskWorkItem(state, future, task)
                else:
                    item = WorkItem(state, future, fn, args, kwargs)
                # Pending before a worker can take it; counted under the lock that orders
                # this pool's submissions, once queued (starting a thread may still fail).
                state.pending[item] = future
                self._work_queue.put(item)
                state.submitted += 1
                self._adjust_thread_count()
        if refused:
            # The stdlib's submit refuses too (those flags never go back), in its words.
            return submit_task(state, super().submit, fn, args, kwargs)
        if len(state.pending) > state.sweep_at:
            state.sweep()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Like the stdlib's ``shutdown``; ``workers_max`` drops to 0."""
        self._ee_state.shut_down()
        super().shutdown(wait, cancel_futures=cancel_futures)

    def stats(self) -> ExecutorStats:
        """Return this pool's numbers now, as a frozen :class:`ExecutorStats`."""
        return self._ee_exporter.stats()

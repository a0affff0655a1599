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
import inspect
import itertools
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from time import monotonic, sleep
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from . import _stdlib
from ._child import WorkerBoot, run_call, run_chunk
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

_SETTLED = _stdlib.SETTLED_STATES
_FINISHED = _stdlib.FINISHED_STATE

#: How long after a pool broke a reading waits for its workers to be gone (see sweep).
BROKEN_SETTLE_SECONDS = 0.1
_PROCESS_CHUNK = _stdlib.process_chunk


def _own_chunk(fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """The public-API path's ``map`` chunk, as ``_stdlib.process_chunk`` is the stdlib's:
    ``submit`` sends it to the workers as a recorded chunk (``run_chunk``)."""
    return [fn(*args) for args in chunk]  # pragma: no cover - replaced in submit()


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[tuple[Any, ...]]:
    """Tuples of ``size`` argument tuples, as the stdlib's ``map`` cuts them."""
    it = zip(*iterables)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _flatten(results: Iterator[list[_T]]) -> Iterator[_T]:
    """The stdlib's ``_chain_from_iterable_of_lists``: each result dropped once yielded."""
    for chunk in results:
        chunk.reverse()
        while chunk:
            yield chunk.pop()


# The keyword arguments Executor.map takes on this Python (buffersize= from 3.14).
_MAP_KEYWORDS = frozenset(inspect.signature(Executor.map).parameters) - {"self", "fn"}

# The stdlib's submit, called without building a super() object on every call.
_std_submit = concurrent.futures.ProcessPoolExecutor.submit

# The slot lock of each pool, kept alive by the pool's manager thread for as long as that
# thread object exists.  A worker opens the lock by name when it starts (spawn and
# forkserver), possibly after the executor object is gone; the manager thread joins every
# worker before it ends, so while it exists the lock must too, and no longer: a lock that
# outlives the pool is reported leaked by the resource tracker.
_locks_of_managers: weakref.WeakKeyDictionary[threading.Thread, Any] = weakref.WeakKeyDictionary()


# Thread-local storage of the manager threads: what is stored there is dropped when the
# thread ends, which is the moment its pool's slot lock may go (see below).
_manager_local = threading.local()


class _Token:
    """An object whose death, at the end of a manager thread, frees a lock."""

    __slots__ = ("__weakref__",)


def _free_lock_after_break(
    executor: weakref.ref[ProcessPoolExecutor], manager: weakref.ref[threading.Thread]
) -> None:
    """A broken pool never starts a worker again: free its slot lock once the manager
    thread has reaped the last one, not when some later garbage collection frees the
    thread object (the stdlib's error tracebacks keep it in cycles), or the resource
    tracker reports the lock leaked by a pool that is never shut down."""

    def free() -> None:
        thread = manager()
        if thread is not None:
            _locks_of_managers.pop(thread, None)
        pool = executor()
        if pool is not None:
            pool._ee_boot.lock = None

    thread = manager()
    if thread is None:
        free()
    elif thread is threading.current_thread():
        # The break is seen here in the manager thread (our future callbacks, inside the
        # stdlib's loop that fails the futures, which a thread start here would slow).
        # A token in its thread-local storage dies when the thread ends.
        token = _Token()
        weakref.finalize(token, free)
        _manager_local.token = token
    else:  # settled by a reader: wait for the manager thread in a short-lived thread

        def join_then_free() -> None:
            thread.join()
            free()

        threading.Thread(
            target=join_then_free, name="executor-exporter: free slot lock", daemon=True
        ).start()


class _ProcessState(ExecutorState):
    """ExecutorState of a process pool: shared-memory slots, settling broken calls."""

    def __init__(
        self, executor_id: str, layout: Layout, slots: SharedSlots, *, known: bool
    ) -> None:
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
        #: Set once the manager thread runs; called at the first break (see
        #: _free_lock_after_break).  Weak references only: the collector may keep this
        #: state after the executor is gone.
        self.on_break: Callable[[], None] | None = None
        #: Every future's done callback: one bound method, made once.
        self.settle = self._settle if known else self._settle_public
        if not known:
            self.watch = self._watch_public  # type: ignore[method-assign]

    def watch(self, future: Future[Any], seq: int, n: int, t_submit: float) -> None:
        """Count a call the stdlib accepted and settle it when its future ends."""
        self.pending[future] = (seq, n, t_submit)
        self.submitters.get()[SUBMITTED] += n
        # add_done_callback() without the future's lock, which would cost more than the
        # rest of this method: if the future ended meanwhile, its callbacks may have run
        # before ours was appended, so it is settled here too (settle() acts once).  That
        # rare case reads the future through its lock: without the GIL, a state seen
        # FINISHED without it does not promise that the exception stored before it is
        # visible.  Should both sides miss each other, the next reading settles it.
        future._done_callbacks.append(self.settle)  # type: ignore[attr-defined]
        if future._state in _SETTLED:
            self._settle_public(future)

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
            if future._state != _FINISHED:
                with self.lock:
                    self.cancelled += call[1]
            return
        self._ended_with(call, exc)

    def _watch_public(self, future: Future[Any], seq: int, n: int, t_submit: float) -> None:
        """``watch`` through the future's public API (internals unknown)."""
        self.pending[future] = (seq, n, t_submit)
        self.submitters.get()[SUBMITTED] += n
        future.add_done_callback(self.settle)

    def _settle_public(self, future: Future[Any]) -> None:
        """``_settle`` through the future's public API (internals unknown)."""
        call = self.pending.pop(future, None)
        if call is None:
            return
        if future.cancelled():
            with self.lock:
                self.cancelled += call[1]
            return
        exc = future.exception()
        if exc is not None:
            self._ended_with(call, exc)

    def _ended_with(self, call: _Call, exc: BaseException) -> None:
        seq, n, _ = call
        if self.shared.mark(seq) >= seq:
            # A worker recorded every item: it returned, raised (a BrokenProcessPool of
            # a pool of its own too), or did not pickle.
            return
        with self.lock:
            on_break = None
            if isinstance(exc, BrokenProcessPool):  # this pool broke
                # Which items a dying worker got to is known once all workers are gone.
                self.broken.append((call, monotonic()))
                on_break, self.on_break = self.on_break, None
            else:  # the call never reached a worker (its arguments did not pickle)
                self.abandoned += n
        if on_break is not None:
            on_break()

    def unsettled(self) -> bool:
        return bool(self.pending or self.broken)

    def sweep(self) -> None:
        """Settle, at read time, every call whose future has ended.

        A future wakes its waiters before it runs its callbacks, so a caller whose last
        future just raised may read before our callback ran: the reading settles those
        futures itself (``settle`` acts once).  The calls a broken pool cut short need the
        dead workers' slots, final only once no worker can write any more; the stdlib
        fails the futures first and terminates the workers next, so the reading waits for
        that, up to BROKEN_SETTLE_SECONDS after the break (never holding the lock).
        """
        for future in list(self.pending):  # list(dict) is one atomic copy
            if future.done():
                self.settle(future)
        first = next(iter(self.broken), None)  # another reader may clear the list
        if first is None:
            return
        deadline = first[1] + BROKEN_SETTLE_SECONDS
        while self.shared.live():
            if monotonic() >= deadline:
                return  # a later reading settles them
            sleep(0.001)
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
        self._ee_known = known = _stdlib.check()
        boot = WorkerBoot(initializer, initargs, layout, patch_call_item=known)
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
        ctx = _stdlib.mp_context(self, mp_context, max_tasks_per_child)
        size = _stdlib.max_workers(self)
        # Room for a replacement worker starting while the one it replaces exits.
        capacity = 2 * size + 1
        # Entries are reused every `ring` calls: that must exceed how far concurrent
        # submitters can reorder calls (a few), nothing more; see SharedSlots.mark.
        ring = max(1024, 8 * size)
        slots = SharedSlots(ctx, layout, capacity, ring)
        boot.raw, boot.lock, boot.capacity, boot.ring = slots.raw, slots.lock, capacity, ring
        if _stdlib.has_manager_thread(self):
            # No worker starts before the manager thread does: until then the executor
            # (through boot) holds the lock alone, so a pool dropped unused frees it.
            slots.lock = None
        self._ee_boot = boot
        # Weak: the stdlib frees its manager thread object at shutdown, and with it the
        # weak reference to the executor whose callback wakes the thread; keeping the
        # object would make that callback fire when the executor dies, long after.
        self._ee_manager: weakref.ref[threading.Thread] | None = None
        self._ee_state = state = _ProcessState(name, layout, slots, known=known)
        self._ee_seq = itertools.count(1)  # 0 would match the zeroed done ring
        state.add_max_workers(size)
        self._ee_exporter = ExecutorExporter._for_state(self, state, registry)

    @property
    def executor_id(self) -> str:
        """The ``executor`` label value."""
        return self._ee_state.executor_id

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Like the stdlib's ``submit``, recorded; returns the stdlib's own future."""
        # One frame on purpose: a helper taking *args costs ~2k instructions per task.
        state = self._ee_state
        seq = next(self._ee_seq)
        t_submit = monotonic()
        n = 1
        call: Any
        if type(fn) is partial and (fn.func is _PROCESS_CHUNK or fn.func is _own_chunk):
            # A chunk of the stdlib's map (see _stdlib.process_chunk): each item a task.
            chunk = args[0]
            n = len(chunk)
            call, args = run_chunk, (fn.args[0], seq, t_submit, chunk)
        elif self._ee_known:
            # Sent in the place of fn: the workers' _CallItem makes it a recorded call.
            call = (fn, seq, t_submit)
        else:
            call = partial(run_call, fn, seq, t_submit)
        try:
            future: Future[_T] = _std_submit(self, call, *args, **kwargs)
        except RuntimeError as exc:  # shutdown, or BrokenProcessPool
            state.rejected(exc)
            raise
        state.watch(future, seq, n, t_submit)
        if self._ee_manager is None:
            self._hand_lock_to_manager()
        return future

    def _hand_lock_to_manager(self) -> None:
        """Once the manager thread runs, it keeps the slot lock alive with this executor;
        the state (which the collector may keep longer) never holds it then."""
        manager = _stdlib.manager_thread(self)
        if manager is None:
            return  # internals unknown: the state keeps the lock (see SharedSlots)
        self._ee_manager = weakref.ref(manager)
        lock = self._ee_boot.lock
        if lock is not None:  # the state never holds it here (see __init__)
            _locks_of_managers[manager] = lock
            self._ee_state.on_break = partial(
                _free_lock_after_break, weakref.ref(self), weakref.ref(manager)
            )

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[_T]:
        """The stdlib's ``map``: chunks of ``chunksize`` items go to the workers together,
        and every item is still a task in the metrics."""
        if self._ee_known:
            # Its chunks come back through submit(), which records them item by item.
            return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **kwargs)
        # Public API only: the stdlib's chunking and words, on Executor.map.
        for name in kwargs:
            if name not in _MAP_KEYWORDS:
                raise TypeError(
                    f"{ProcessPoolExecutor.map.__qualname__}() got an unexpected keyword "
                    f"argument {name!r}"
                )
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        results = Executor.map(
            self, partial(_own_chunk, fn), _chunks(iterables, chunksize), timeout=timeout, **kwargs
        )
        return _flatten(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Like the stdlib's ``shutdown``; ``workers_max`` drops to 0."""
        self._ee_state.shut_down()
        # The stdlib forgets its manager thread at the first shutdown; our weak reference
        # finds it while it runs, to know when the last worker is gone.
        manager = _stdlib.manager_thread(self)
        if manager is None and self._ee_manager is not None:
            manager = self._ee_manager()
        super().shutdown(wait, cancel_futures=cancel_futures)
        if not (wait and self._ee_known):
            return
        if manager is not None and manager is not threading.current_thread():
            # After terminate_workers() or kill_workers() (a shutdown(wait=False) first)
            # the stdlib no longer joins the thread that is still reaping the workers.
            manager.join()
        if manager is None or not manager.is_alive():
            # Every worker has exited and none will start: free the slot lock now, or
            # the resource tracker reports it leaked (spawn and forkserver).
            if manager is not None:
                _locks_of_managers.pop(manager, None)
            self._ee_state.shared.lock = None
            self._ee_boot.lock = None

    def stats(self) -> ExecutorStats:
        """Return this pool's numbers now, as a frozen :class:`ExecutorStats`."""
        return self._ee_exporter.stats()

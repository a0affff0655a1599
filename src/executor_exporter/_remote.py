"""The parent side of proxied executors that run tasks in other processes or hosts.

dask.distributed's ``Client.get_executor()``, loky and mpi4py's ``MPIPoolExecutor`` run
each call in a worker process, maybe on another machine, and their futures say nothing
of when a call starts (dask's never report ``running()``; loky's do as soon as a call is
queued).  So the proxy sends a :class:`~executor_exporter._remote_task.RemoteTask`, which
measures the call on the worker's wall clock, and hands the user a future of its own,
completed from the executor's future once the outcome is in: the times are recorded
then, the wait clamped at 0 where the two hosts' clocks disagree.  Workers on this host
also post each start on a :class:`StartBoard`, and dask workers elsewhere log it as a
dask event to the client, so a scrape sees calls running live.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import mmap
import os
import secrets
import tempfile
import weakref
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import Future
from time import time
from typing import Any

from ._layout import COMPLETED_SUM, FAILED_SUM, SUBMITTED, WAIT_SUM, Layout
from ._remote_task import (
    BOARD_DOUBLES,
    BOARD_ENTRIES,
    BOARD_HEADER,
    SPAN_ATTR,
    RemoteTask,
)
from ._slots import ThreadSlots
from ._state import ExecutorState, Totals

# Executors whose workers are other processes, by the module their class comes from.
_OUT_OF_PROCESS_MODULES = ("distributed.", "loky.", "joblib.externals.loky.", "mpi4py.")


def runs_out_of_process(executor: object) -> bool:
    """Whether ``executor`` runs calls outside this process (detected, never imported)."""
    if isinstance(executor, concurrent.futures.ProcessPoolExecutor):
        return True
    return (type(executor).__module__ + ".").startswith(_OUT_OF_PROCESS_MODULES)


def _unlink(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child that inherited the finalizer
        with contextlib.suppress(FileNotFoundError):  # removed by someone else
            os.unlink(path)


class StartBoard:
    """A file in shared memory where workers on this host post when each call starts.

    Entries are indexed by the call's sequence number modulo the board's size, and hold
    ``(t_start, seq)``: an entry showing another number says nothing of this call.  The
    file is removed when the board is collected, or at exit.
    """

    __slots__ = ("__weakref__", "_mmap", "_view", "path", "token")

    def __init__(self) -> None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        fd, self.path = tempfile.mkstemp(prefix="executor-exporter-", dir=folder)
        try:
            os.ftruncate(fd, 8 * BOARD_DOUBLES)  # sparse: pages appear as calls are posted
            self._mmap = mmap.mmap(fd, 0)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        weakref.finalize(self, _unlink, self.path, os.getpid())
        self._view = memoryview(self._mmap).cast("d")
        # A double holds any integer below 2**53 exactly.
        self.token = float(secrets.randbits(52) + 1)
        self._view[0] = self.token

    def start(self, seq: int) -> float:
        """When call ``seq`` started on a worker of this host (wall clock), or 0.0."""
        i = BOARD_HEADER + 2 * (seq % BOARD_ENTRIES)
        view = self._view
        if view[i + 1] != seq:
            return 0.0
        return float(view[i])


class _Call:
    """One call in the pending set, until its outcome is in."""

    __slots__ = ("seq", "t_submit")

    n = 1
    started = False

    def __init__(self, seq: int, t_submit: float) -> None:
        self.seq = seq
        self.t_submit = t_submit


class RemoteState(ExecutorState):
    """ExecutorState of a proxied out-of-process executor.

    Outcomes are recorded in the slot of whichever thread completes the executor's
    futures; running calls are read from the start board at scrape time.
    """

    def __init__(self, executor_id: str, executor_type: str, layout: Layout) -> None:
        super().__init__(
            executor_id, executor_type, layout, ThreadSlots(layout.width), knows_workers=False
        )
        self.board = StartBoard()
        self.seq = itertools.count(1)  # 0 would match an empty board entry
        #: dask event topic that workers on other hosts post starts to ("" for none).
        self.topic = ""
        #: Starts received as dask events, by call; entries leave with their call.
        self.posted: dict[int, float] = {}

    def listen(self, executor: object) -> None:
        """Receive the starts that dask workers on other hosts log as events."""
        client = getattr(executor, "_client", None)
        if not type(executor).__module__.startswith("distributed.") or not hasattr(
            client, "subscribe_topic"
        ):
            return
        posted = self.posted

        def on_start(event: tuple[float, list[float]]) -> None:
            seq, t_start = event[1]
            posted[int(seq)] = t_start

        self.topic = f"executor-exporter-{int(self.board.token)}"
        client.subscribe_topic(self.topic, on_start)  # type: ignore[union-attr]

    def started(self, seq: int) -> float:
        """When call ``seq`` started (wall clock), as far as can be seen here; or 0.0."""
        return self.board.start(seq) or self.posted.get(seq, 0.0)

    def sweep(self) -> None:
        """Nothing to sweep: each call's outcome callback settles it (see RemoteFuture)."""

    def settled(self, call: _Call) -> None:
        """Forget a call whose outcome is recorded."""
        self.pending.pop(call, None)
        self.posted.pop(call.seq, None)

    def record(self, call: _Call, t_start: float, t_end: float, ok: bool) -> None:
        """Record a call that ran from ``t_start`` to ``t_end`` (worker's wall clock)."""
        layout = self.layout
        slot = self.slots.get()  # type: ignore[attr-defined]
        wait = max(0.0, t_start - call.t_submit)  # clocks of two hosts may disagree
        elapsed = max(0.0, t_end - t_start)
        slot[layout.wait + bisect_left(layout.wait_bounds, wait)] += 1.0
        slot[WAIT_SUM] += wait
        base, total = (layout.completed, COMPLETED_SUM) if ok else (layout.failed, FAILED_SUM)
        slot[base + bisect_left(layout.duration_bounds, elapsed)] += 1.0
        slot[total] += elapsed

    def read(self, now: float) -> Totals:
        t = super().read(now)
        wall = time()
        started = self.started
        running = 0
        in_flight = oldest_running = oldest_queued = 0.0
        calls = list(self.pending)  # list(dict) is one atomic copy
        for call in calls:
            start = started(call.seq)
            if start:
                running += 1
                age = max(0.0, wall - start)
                in_flight += age
                oldest_running = max(oldest_running, age)
            elif not oldest_queued:  # the pending set is in submission order
                oldest_queued = max(0.0, wall - call.t_submit)
        t.running += running
        t.queued = max(0, t.queued - running)
        t.busy += in_flight
        t.oldest_running_age = oldest_running
        t.oldest_queued_age = oldest_queued if t.queued else 0.0
        if len(self.posted) > len(calls):  # events that came after their call ended
            live = {call.seq for call in calls}
            for seq in [seq for seq in list(self.posted) if seq not in live]:
                self.posted.pop(seq, None)
        return t

    def _oldest_queued_age(self, now: float, slots: list[list[float]]) -> float:
        return 0.0  # read() finds it, on the wall clock


class RemoteFuture(Future[Any]):
    """The future the proxy hands out: completed from the executor's own future.

    ``cancel()`` is the executor's; ``running()`` is true once a worker of this host
    posted the start, or when the executor's future says so.
    """

    def __init__(self, inner: Future[Any], state: RemoteState, call: _Call) -> None:
        super().__init__()
        self._ee_inner = inner
        self._ee_state = state
        self._ee_call = call

    def cancel(self) -> bool:
        """Cancel the call in the executor; this future follows when it is done."""
        if self.done():
            return self.cancelled()
        # The executor's future runs its callbacks (our _settle) as it cancels, so this
        # future is cancelled too by the time this returns.
        return self._ee_inner.cancel()

    def running(self) -> bool:
        """Whether the call is running on a worker now (as far as can be seen here)."""
        if self.done():
            return False
        return bool(self._ee_state.started(self._ee_call.seq)) or self._ee_inner.running()

    def _settle(self, inner: Future[Any]) -> None:
        # Record, leave the pending set, and only then complete this future: whoever
        # waits on it and reads the numbers next finds the call settled.
        state, call = self._ee_state, self._ee_call
        cancelled = inner.cancelled()
        exc = None if cancelled else inner.exception()
        result = None
        try:
            if cancelled:
                self._failed(cancelled=True)
            elif exc is None:
                t_start, t_end, result = inner.result()
                state.record(call, t_start, t_end, ok=True)
            else:
                span = vars(exc).pop(SPAN_ATTR, None) if hasattr(exc, "__dict__") else None
                if span is not None:
                    state.record(call, span[0], span[1], ok=False)
                else:  # the executor failed it: the worker died, or it never got there
                    self._failed()
        finally:
            state.settled(call)
        if cancelled:
            Future.cancel(self)
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        elif exc is None:
            self.set_result(result)
        else:
            self.set_exception(exc)

    def _failed(self, *, cancelled: bool = False) -> None:
        """Settle a call that has no outcome from its worker."""
        state, call = self._ee_state, self._ee_call
        start = state.started(call.seq)
        if start:  # it started and was cut short (worker killed, task cancelled)
            state.record(call, start, time(), ok=False)
            return
        with state.lock:
            if cancelled:
                state.cancelled += 1
            else:  # failed without starting: duration 0, no wait
                state.abandoned += 1


def submit_remote(
    state: RemoteState,
    submit: Callable[[RemoteTask], Future[Any]],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Future[Any]:
    """Submit ``fn(*args, **kwargs)`` through ``submit`` as a RemoteTask, recorded."""
    seq = next(state.seq)
    call = _Call(seq, time())
    pending = state.pending
    # In the set before the executor sees the call, since it may end at once.
    pending[call] = None
    board = state.board
    try:
        inner = submit(RemoteTask(fn, args, kwargs, seq, board.path, board.token, state.topic))
    except BaseException as exc:
        pending.pop(call, None)
        if isinstance(exc, RuntimeError):  # shutdown, or BrokenExecutor (a subclass)
            state.rejected(exc)
        raise
    state.submitters.get()[SUBMITTED] += 1.0
    future = RemoteFuture(inner, state, call)
    inner.add_done_callback(future._settle)
    return future

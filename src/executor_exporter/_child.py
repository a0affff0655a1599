"""What runs inside a process pool's workers.

Everything here is sent to the children by pickle (under ``spawn`` and ``forkserver``
too), so it is made of module-level classes.  A worker records each item's wait and
duration straight into its shared-memory slot: no message to the parent per item, and
the numbers are visible to the parent's scrape while the item still runs.

The outcome of a call goes back to the parent as an :class:`Outcome` *value*, even when
the call raised: an exception on the parent's inner future then means the call never
ran to its end in a worker (a broken pool, or arguments that failed to pickle), which
is how the parent knows which items no worker accounted for.
"""

from __future__ import annotations

import pickle
from bisect import bisect_left
from collections.abc import Callable, Sequence

# The stdlib's own wrapper keeps the remote traceback text exactly as the stdlib shows it
# (exc.__cause__ is a concurrent.futures.process._RemoteTraceback, as with the stdlib).
from concurrent.futures.process import _ExceptionWithTraceback
from multiprocessing.reduction import ForkingPickler
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
from ._shared import claim, release

# (slot, layout) of this worker process, set by WorkerBoot; None in the parent.
_worker: tuple[Any, Layout] | None = None


class WorkerBoot:
    """The pool's initializer: claims a slot, runs the user's initializer, counts it.

    The parent fills in ``raw`` and ``lock`` after the stdlib constructor has chosen the
    multiprocessing context, before any worker is started.
    """

    __slots__ = ("capacity", "initargs", "initializer", "layout", "lock", "raw")

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        layout: Layout,
        capacity: int,
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self.layout = layout
        self.capacity = capacity
        self.raw: Any = None
        self.lock: Any = None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in WorkerBoot.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(WorkerBoot.__slots__, state):
            setattr(self, name, value)

    def __call__(self) -> None:
        global _worker
        claimed = claim(self.raw, self.lock, self.layout, self.capacity)
        if claimed is None:  # pragma: no cover - capacity is twice the pool size
            slot: Any = [0.0] * self.layout.width  # run, unrecorded, rather than fail
        else:
            index, slot = claimed
            # Runs at a normal exit (max_tasks_per_child, shutdown), not when killed.
            Finalize(None, release, (self.raw, self.lock, self.layout, index), exitpriority=10)
        _worker = (slot, self.layout)
        if self.initializer is not None:
            self.initializer(*self.initargs)  # raising breaks the pool, as in the stdlib
        slot[INITIALIZED] += 1.0


class Outcome:
    """A call's result list (or single result), or the exception it raised."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value

    def __reduce__(self) -> tuple[Callable[[bytes], Outcome], tuple[bytes]]:
        # Pickle the payload here, so that a result or exception that does not pickle
        # still reaches the parent as an Outcome (the failure), like the stdlib reports it.
        payload = (self.ok, self.value)
        try:
            data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
        except Exception:
            try:  # multiprocessing's own reducers (connections, sockets), as the stdlib
                data = bytes(ForkingPickler.dumps(payload))
            except BaseException as exc:
                data = pickle.dumps((False, _with_traceback(exc)), pickle.HIGHEST_PROTOCOL)
        return (load_outcome, (data,))


def load_outcome(data: bytes) -> Outcome:
    ok, value = ForkingPickler.loads(data)
    return Outcome(ok, value)


def _with_traceback(exc: BaseException) -> Any:
    return _ExceptionWithTraceback(exc, exc.__traceback__)  # type: ignore[arg-type]


class Call:
    """One submitted call (``chunk`` False) or one ``map`` chunk of argument tuples."""

    __slots__ = ("args", "chunk", "fn", "kwargs", "seq", "t_submit")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        seq: int,
        t_submit: float,
        chunk: bool,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.seq = seq
        self.t_submit = t_submit
        self.chunk = chunk

    def __reduce__(self) -> tuple[type[Call], tuple[Any, ...]]:
        return (Call, (self.fn, self.args, self.kwargs, self.seq, self.t_submit, self.chunk))

    def __call__(self) -> Outcome:
        worker = _worker
        if worker is None:  # pragma: no cover - not started by our pool: just run it
            worker = ([0.0] * 64, Layout((1.0,), (1.0,)))
        slot, layout = worker
        chunk = self.chunk
        items = self.args if chunk else (self.args,)
        n = len(items)
        fn = self.fn
        kwargs = self.kwargs or {}
        t_submit = self.t_submit
        wait_base, wait_bounds = layout.wait, layout.wait_bounds
        ok_base, fail_base, bounds = layout.completed, layout.failed, layout.duration_bounds
        # Starts are counted by the wait histogram alone; should this worker die, the
        # parent tells how many items of this call started from it and CHUNK_BASE.  Each
        # event is a single store, so a death at any point leaves a consistent slot.
        # RUN_START is the start of the item running now if the slot shows more starts
        # than ends; it is not cleared between items.
        slot[CHUNK_BASE] = sum(slot[wait_base:ok_base])
        slot[RUN_SEQ] = float(self.seq)
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
            except BaseException as exc:
                elapsed = monotonic() - t_start
                slot[fail_base + bisect_left(bounds, elapsed)] += 1.0
                slot[FAILED_SUM] += elapsed
                # The rest of the chunk never runs, as in the stdlib: failed, duration 0.
                rest = n - len(results) - 1
                if rest:
                    slot[fail_base] += rest
                    slot[ABANDONED] += rest
                return Outcome(False, _with_traceback(exc))
            t_end = monotonic()
            elapsed = t_end - t_start
            slot[ok_base + bisect_left(bounds, elapsed)] += 1.0
            slot[COMPLETED_SUM] += elapsed
            append(result)
            t_start = t_end
        return Outcome(True, results if chunk else results[0])

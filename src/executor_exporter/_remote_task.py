"""What runs in the workers of an out-of-process executor (dask, loky, mpi4py...).

The proxy sends a :class:`RemoteTask` in place of each call.  It reads the wall clock
around the call, since the worker may sit on another host whose monotonic clock means
nothing here, and sends both times back with the outcome: packed with the result, or as
an attribute of the exception, which is re-raised so that the executor carries it (and
its remote traceback) exactly as it would without us.

When the worker shares this host with the parent, it also posts the start of each call
on the parent's *start board*, a small file in shared memory, so that the parent sees the
call running while it runs.  A dask worker on another host logs it as a dask event
instead, which reaches the parent's client through the scheduler.  Elsewhere the start
is known when the outcome arrives.
"""

from __future__ import annotations

import contextlib
import mmap
import sys
from collections.abc import Callable
from time import time
from typing import Any

#: Name of the attribute carrying ``(t_start, t_end)`` on an exception from a task.
SPAN_ATTR = "_executor_exporter_span"

# The start board: doubles.  [0] holds the board's token (a worker checks it, so that a
# same-named file on another host is never written), [1] is spare; then one entry of
# (t_start, seq) per call, at index seq % BOARD_ENTRIES.
BOARD_HEADER = 2
BOARD_ENTRIES = 1 << 16
BOARD_DOUBLES = BOARD_HEADER + 2 * BOARD_ENTRIES

# This process's views of the boards it was asked to write, by path (None: not here).
_boards: dict[str, Any] = {}


def _board(path: str, token: float) -> Any:
    try:
        return _boards[path]
    except KeyError:
        pass
    view = None
    try:
        with open(path, "r+b") as f:
            m = mmap.mmap(f.fileno(), 0)
        candidate = memoryview(m).cast("d")
        if len(candidate) == BOARD_DOUBLES and candidate[0] == token:
            view = candidate
    except (OSError, ValueError, TypeError):
        pass  # another host, or the board is gone: the start arrives with the outcome
    _boards[path] = view
    return view


def _log_dask_event(topic: str, seq: int, t_start: float) -> None:
    distributed = sys.modules.get("distributed")  # never imported here: only if loaded
    if distributed is None:
        return
    try:
        worker = distributed.get_worker()
    except ValueError:  # not in a dask worker
        return
    worker.log_event(topic, [seq, t_start])


class RemoteTask:
    """One call, as sent to the worker: runs it and reports when it started and ended."""

    __slots__ = ("args", "board", "fn", "kwargs", "seq", "token", "topic")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        board: str,
        token: float,
        topic: str = "",
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.seq = seq
        self.board = board
        self.token = token
        self.topic = topic

    @property
    def __name__(self) -> str:
        # What dask names the task after (its dashboard and keys), and repr() shows.
        return str(getattr(self.fn, "__name__", type(self.fn).__name__))

    def __repr__(self) -> str:
        return f"<RemoteTask {self.__name__} #{self.seq}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            RemoteTask,
            (self.fn, self.args, self.kwargs, self.seq, self.board, self.token, self.topic),
        )

    def __call__(self) -> tuple[float, float, Any]:
        t_start = time()
        view = _board(self.board, self.token)
        if view is not None:
            i = BOARD_HEADER + 2 * (self.seq % BOARD_ENTRIES)
            # The time first: a reader that sees the seq sees the time that goes with it.
            view[i] = t_start
            view[i + 1] = float(self.seq)
        elif self.topic:
            _log_dask_event(self.topic, self.seq, t_start)
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            # Without a __dict__ it cannot carry them: the parent times it from what it saw.
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, SPAN_ATTR, (t_start, time()))
            # Leave the traceback as the executor would show it: without this frame.
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _CALL_CODE:
                exc.__traceback__ = tb.tb_next
            raise
        return t_start, time(), result


_CALL_CODE = RemoteTask.__call__.__code__

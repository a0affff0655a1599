"""InstrumentedExecutorProxy: metrics for an executor of any kind."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from ._remote import RemoteState, submit_remote
from ._task import submit_task
from .exporter import ExecutorExporter, check_executor
from .stats import ExecutorStats

__all__ = ["InstrumentedExecutorProxy"]

_T = TypeVar("_T")


class InstrumentedExecutorProxy(Executor):
    """An :class:`~concurrent.futures.Executor` that forwards to ``executor`` and
    records what passes through in ``exporter``.

    ``map`` is built on this proxy's own ``submit`` (each item is a task, whatever the
    wrapped executor's ``map`` would do).  ``max_workers`` is the wrapped executor's
    size when known; without it ``workers_max`` is left out rather than guessed.

    For executors that run calls in this process, each call is wrapped and timed where
    it runs, and the wrapped executor's futures are handed out.  For executors whose
    workers are other processes or hosts (``exporter.remote``: dask.distributed, loky,
    mpi4py...), each call is sent with a picklable wrapper that times it on the worker,
    and ``submit`` returns a future of the proxy's own, completed from the executor's
    (its ``cancel()`` cancels the call in the executor).  Stdlib process pools are better
    served by :class:`~executor_exporter.ProcessPoolExecutor`.
    """

    def __init__(
        self, executor: Executor, exporter: ExecutorExporter, max_workers: int | None = None
    ) -> None:
        check_executor(executor)
        if not isinstance(exporter, ExecutorExporter):
            raise TypeError(f"exporter must be an ExecutorExporter, not {type(exporter).__name__}")
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int)
        ):
            raise TypeError(
                f"max_workers must be an int or None, not {type(max_workers).__name__}"
            )
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._executor = executor
        self._exporter = exporter
        self._state = exporter._state
        self._state.add_max_workers(max_workers)
        state = self._state
        self._submit_call: Callable[
            [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Future[Any]
        ]
        if isinstance(state, RemoteState):
            self._submit_call = partial(submit_remote, state, executor.submit)
        else:
            self._submit_call = partial(submit_task, state, executor.submit)

    @property
    def executor(self) -> Executor:
        """The wrapped executor."""
        return self._executor

    @property
    def exporter(self) -> ExecutorExporter:
        """The exporter recording this proxy's tasks."""
        return self._exporter

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Submit ``fn(*args, **kwargs)`` to the wrapped executor, recorded."""
        return self._submit_call(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the wrapped executor down; ``cancel_futures`` is passed on only when
        true, since some executors do not take it."""
        self._state.shut_down()
        if cancel_futures:
            self._executor.shutdown(wait, cancel_futures=True)
        else:
            self._executor.shutdown(wait)

    def stats(self) -> ExecutorStats:
        """Return the numbers recorded through this proxy's exporter."""
        return self._exporter.stats()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)

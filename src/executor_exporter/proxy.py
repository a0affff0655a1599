"""InstrumentedExecutorProxy: metrics for an executor of any kind."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any, TypeVar

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
    size when known; without it ``workers_max`` is left out rather than guessed.  Tasks
    are wrapped in a callable run in-process, so this suits executors that run Python
    callables in threads of this process; process pools want
    :class:`~executor_exporter.ProcessPoolExecutor`.
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
        return submit_task(self._state, self._executor.submit, fn, args, kwargs)

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

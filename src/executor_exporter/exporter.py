"""ExecutorExporter: the metrics of one executor instance, exported to a registry."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from . import multiprocess
from ._layout import Layout, validate_buckets
from ._remote import RemoteState, runs_out_of_process
from ._slots import ThreadSlots
from ._state import ExecutorState
from .collector import collector_for
from .stats import ExecutorStats

__all__ = ["ExecutorExporter"]


def resolve_id(executor_id: object, exporter_id: object) -> str:
    """Return the ``executor`` label value from the two accepted spellings."""
    if executor_id is not None and exporter_id is not None:
        raise TypeError("pass executor_id or its alias exporter_id, not both")
    value = executor_id if executor_id is not None else exporter_id
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"executor_id must be a str, not {type(value).__name__}")
    return value


def type_name(cls: type) -> str:
    """The ``executor_type`` label: the fully qualified name of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def exporter_options(
    executor_id: object,
    exporter_id: object,
    registry: object,
    wait_buckets: Iterable[float] | None,
    duration_buckets: Iterable[float] | None,
) -> tuple[str, Layout]:
    """Check the options every exported executor takes, before anything is created;
    return the ``executor`` label and the slot layout."""
    name = resolve_id(executor_id, exporter_id)
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry, "
            f"not {type(registry).__name__}"
        )
    layout = Layout(
        validate_buckets(wait_buckets, "wait_buckets"),
        validate_buckets(duration_buckets, "duration_buckets"),
    )
    return name, layout


def check_executor(executor: object) -> None:
    """Refuse what is not an executor instance (a class, None, a number...)."""
    if isinstance(executor, type):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor instance, not the class {executor!r}"
        )
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, not {type(executor).__name__}"
        )


def _close(state: ExecutorState) -> None:
    state.live = False
    state.closed = True


class ExecutorExporter:
    """Records and exports the metrics of one :class:`concurrent.futures.Executor`.

    Pair it with :class:`~executor_exporter.InstrumentedExecutorProxy` to instrument an
    executor of any kind::

        exporter = ExecutorExporter(executor, executor_id="crawler")
        pool = InstrumentedExecutorProxy(executor, exporter, max_workers=42)

    ``executor_id`` (alias ``exporter_id``) is the ``executor`` label; instances sharing
    an id and executor type are exported as one.  ``registry`` defaults to
    prometheus_client's global registry.  ``wait_buckets`` and ``duration_buckets`` set
    the histogram bounds in seconds (default :data:`~executor_exporter.DEFAULT_BUCKETS`);
    instances sharing an id must share them.  Nothing is registered until the first
    exporter is made for a registry, and then one collector serves all executors.

    ``remote`` says whether the executor runs calls in other processes or hosts; by
    default it is detected (dask.distributed, loky, mpi4py and stdlib process pools do).
    Calls of a remote executor are timed on the worker, on its wall clock, and the
    proxy hands out futures of its own; set it for an out-of-process executor of
    another kind.
    """

    __slots__ = ("__weakref__", "_state")

    def __init__(
        self,
        executor: Any,
        executor_id: str | None = None,
        *,
        exporter_id: str | None = None,
        registry: CollectorRegistry | None = None,
        wait_buckets: Iterable[float] | None = None,
        duration_buckets: Iterable[float] | None = None,
        remote: bool | None = None,
    ) -> None:
        check_executor(executor)
        name, layout = exporter_options(
            executor_id, exporter_id, registry, wait_buckets, duration_buckets
        )
        if remote is None:
            remote = runs_out_of_process(executor)
        elif not isinstance(remote, bool):
            raise TypeError(f"remote must be a bool or None, not {type(remote).__name__}")
        executor_type = type_name(type(executor))
        state: ExecutorState
        if remote:
            state = RemoteState(name, executor_type, layout)
            state.listen(executor)
        else:
            state = ExecutorState(
                name, executor_type, layout, ThreadSlots(layout.width), knows_workers=False
            )
        self._state = state
        self._export(executor, registry)

    @classmethod
    def _for_state(
        cls, owner: object, state: ExecutorState, registry: CollectorRegistry | None
    ) -> ExecutorExporter:
        """Export ``state`` on behalf of a drop-in executor ``owner``."""
        self = cls.__new__(cls)
        self._state = state
        self._export(owner, registry)
        return self

    def _export(self, owner: object, registry: CollectorRegistry | None) -> None:
        collector = collector_for(registry)
        # When the executor is gone its numbers are folded into its id's totals (an
        # executor that cannot be weakly referenced keeps its state to the end).
        try:
            finalizer = weakref.finalize(owner, _close, self._state)
        except TypeError:
            finalizer = None
        try:
            collector.add(self._state)
        except BaseException:
            if finalizer is not None:
                finalizer.detach()
            raise
        multiprocess.exported()

    @property
    def executor_id(self) -> str:
        """The ``executor`` label value (``""`` when no id was given)."""
        return self._state.executor_id

    @property
    def remote(self) -> bool:
        """Whether calls are timed on remote workers (see the class docstring)."""
        return isinstance(self._state, RemoteState)

    @property
    def executor_type(self) -> str:
        """The ``executor_type`` label value: the wrapped executor's class."""
        return self._state.executor_type

    def stats(self) -> ExecutorStats:
        """Return this instance's numbers now (the exported series add up instances
        sharing an id)."""
        return self._state.stats(time.monotonic())

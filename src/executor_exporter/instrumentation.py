"""Instrument the pools of code you don't own: ``instrument()`` / ``uninstrument()``.

:func:`instrument` swaps the stdlib classes ``concurrent.futures.ThreadPoolExecutor`` and
``concurrent.futures.ProcessPoolExecutor`` for instrumented stand-ins, so that pools made
by any code afterwards export their metrics; :func:`uninstrument` puts the stdlib classes
back.  :func:`instrument_asyncio` gives one event loop an instrumented default executor.
Importing this module changes nothing.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client import CollectorRegistry

from .process import ProcessPoolExecutor
from .thread import ThreadPoolExecutor

if TYPE_CHECKING:
    import asyncio

__all__ = ["instrument", "instrument_asyncio", "is_instrumented", "uninstrument"]

# The stdlib classes themselves: the bases of our drop-ins, whatever the modules hold now.
_STDLIB_THREAD_POOL: type = ThreadPoolExecutor.__bases__[0]
_STDLIB_PROCESS_POOL: type = ProcessPoolExecutor.__bases__[0]

_STDLIB_INTERPRETER_POOL: type | None = None
if sys.version_info >= (3, 14):  # pragma: py-gte-314
    try:
        import concurrent.futures.interpreter

        from .interpreter import InterpreterPoolExecutor
    except ImportError:  # a build without sub-interpreters
        pass
    else:
        _STDLIB_INTERPRETER_POOL = InterpreterPoolExecutor.__bases__[0]

_MISSING = object()  # an attribute the module did not hold (yet): concurrent.futures is lazy


class _StandIn(type):
    """Metaclass of the stand-ins: ``isinstance`` and ``issubclass`` against a stand-in
    answer as against the stdlib class it replaces.

    So ``isinstance(pool, concurrent.futures.ThreadPoolExecutor)`` keeps meaning "a thread
    pool" while instrumented, for plain stdlib pools and our drop-ins too (asyncio's
    ``set_default_executor`` checks exactly that).  Subclasses of a stand-in (classes that
    code defines while instrumented) check as ordinary classes.
    """

    def __instancecheck__(cls, instance: object) -> bool:
        original = cls.__dict__.get("_ee_original")
        if original is None:
            return super().__instancecheck__(instance)
        return isinstance(instance, original)

    def __subclasscheck__(cls, subclass: type) -> bool:
        original = cls.__dict__.get("_ee_original")
        if original is None:
            return super().__subclasscheck__(subclass)
        return issubclass(subclass, original)

    def __repr__(cls) -> str:
        if "_ee_original" in cls.__dict__:
            return f"<class '{cls.__module__}.{cls.__qualname__}' (instrumented)>"
        return super().__repr__()


class _ThreadDefaults:
    """The constructor of the stand-ins whose workers are threads (thread and, 3.14+,
    interpreter pools, which take the same arguments): the defaults that instrument()
    was given, and ``thread_name_prefix`` as the id when the code names its pool."""

    _ee_default_id: ClassVar[str] = ""
    _ee_registry: ClassVar[CollectorRegistry | None] = None

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
        if executor_id is None and exporter_id is None:
            named = isinstance(thread_name_prefix, str) and thread_name_prefix
            executor_id = thread_name_prefix if named else self._ee_default_id
        super().__init__(  # type: ignore[call-arg]
            max_workers,
            thread_name_prefix,
            initializer,
            initargs,
            executor_id=executor_id,
            exporter_id=exporter_id,
            registry=self._ee_registry if registry is None else registry,
            wait_buckets=wait_buckets,
            duration_buckets=duration_buckets,
            **ctxkwargs,
        )


class _InstrumentedThreadPool(_ThreadDefaults, ThreadPoolExecutor, metaclass=_StandIn):
    """Our drop-in ThreadPoolExecutor with the defaults that instrument() was given."""


class _InstrumentedProcessPool(ProcessPoolExecutor, metaclass=_StandIn):
    """Our drop-in ProcessPoolExecutor with the defaults that instrument() was given."""

    _ee_default_id: ClassVar[str] = ""
    _ee_registry: ClassVar[CollectorRegistry | None] = None

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
        if executor_id is None and exporter_id is None:
            executor_id = self._ee_default_id
        super().__init__(
            max_workers,
            mp_context,
            initializer,
            initargs,
            max_tasks_per_child=max_tasks_per_child,
            executor_id=executor_id,
            exporter_id=exporter_id,
            registry=self._ee_registry if registry is None else registry,
            wait_buckets=wait_buckets,
            duration_buckets=duration_buckets,
        )


if sys.version_info >= (3, 14) and _STDLIB_INTERPRETER_POOL is not None:  # pragma: py-gte-314

    class _InstrumentedInterpreterPool(
        _ThreadDefaults, InterpreterPoolExecutor, metaclass=_StandIn
    ):
        """Our drop-in InterpreterPoolExecutor with the defaults that instrument() was given."""


def _stand_in(
    template: type, original: type, default_id: str, registry: CollectorRegistry | None
) -> type:
    """A stand-in for ``original``, made afresh by each instrument() call.

    It is named like the stdlib class so the ``executor_type`` label (and that of our
    drop-ins, which read ``concurrent.futures.ThreadPoolExecutor`` when constructed) stays
    ``concurrent.futures.thread.ThreadPoolExecutor``.
    """
    namespace = {
        "__module__": original.__module__,
        "__qualname__": original.__qualname__,
        "__doc__": (
            f"{original.__module__}.{original.__qualname__}, instrumented by "
            "executor_exporter.instrument(): takes the arguments of executor_exporter's "
            f"{original.__name__} too."
        ),
        "_ee_original": original,
        "_ee_default_id": default_id,
        "_ee_registry": registry,
    }
    return _StandIn(original.__name__, (template,), namespace)


class _Patch:
    """What one instrument() call did, so that uninstrument() can undo it."""

    __slots__ = ("args", "saved")

    def __init__(
        self,
        args: tuple[CollectorRegistry | None, str | None, str | None],
        saved: list[tuple[ModuleType, str, object]],
    ) -> None:
        self.args = args
        self.saved = saved


_lock = threading.Lock()
_patch: _Patch | None = None


def _check_id(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


def instrument(
    *,
    registry: CollectorRegistry | None = None,
    thread_id: str | None = None,
    process_id: str | None = None,
) -> None:
    """Make every thread and process pool created from now on export its metrics.

    Replaces ``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` in the modules
    ``concurrent.futures``, ``concurrent.futures.thread`` and ``concurrent.futures.process``
    (and on 3.14+ ``InterpreterPoolExecutor`` in ``concurrent.futures`` and
    ``concurrent.futures.interpreter``, labelled like thread pools: ``thread_id``)
    with stand-ins: subclasses of :class:`executor_exporter.ThreadPoolExecutor` /
    :class:`executor_exporter.ProcessPoolExecutor` (themselves subclasses of the stdlib
    classes).  Code that reads the class after this call, by
    ``concurrent.futures.ThreadPoolExecutor(...)`` or by
    ``from concurrent.futures import ThreadPoolExecutor``, gets an instrumented pool; so
    does asyncio's default executor, created on the first ``run_in_executor(None, ...)`` or
    ``asyncio.to_thread`` of a loop that has none yet.

    - ``registry``: where the stand-ins' pools are exported (default: prometheus_client's
      global registry); a pool may still be given ``registry=`` itself.
    - The ``executor`` label of a stand-in pool: its ``executor_id=`` (or ``exporter_id=``)
      when given; else, for a thread pool, its ``thread_name_prefix`` when not empty (so
      asyncio's default executor is ``"asyncio"``); else ``thread_id`` (thread pools) or
      ``process_id`` (process pools); else ``""``.  Pools of the same id are exported as
      one series set.
    - ``isinstance`` and ``issubclass`` against the stand-ins answer as against the stdlib
      classes, so plain stdlib pools (and our drop-ins) still pass
      ``isinstance(pool, concurrent.futures.ThreadPoolExecutor)``.  The stand-ins are
      named like the stdlib classes: ``executor_type`` does not change.
    - Idempotent: while instrumented, another call does nothing (it warns when given other
      arguments: :func:`uninstrument` first to change them).  Thread-safe.

    Limits:

    - Code that got hold of the class before this call keeps the stdlib class: a module
      that ran ``from concurrent.futures import ThreadPoolExecutor`` (at its top, when it
      was imported) before ``instrument()``, or that stored the class elsewhere.  Call
      ``instrument()`` first thing in your entry point, before importing such libraries.
    - Likewise, subclasses of the stdlib classes defined before this call (by a library at
      import) are not affected, and pools created before it stay uninstrumented.
      Conversely, pools created while instrumented and subclasses defined while
      instrumented stay instrumented after :func:`uninstrument`.
    - Process pools under ``spawn`` or ``forkserver``: the children re-import modules from
      scratch, uninstrumented.  That is fine, the numbers of a process pool are recorded in
      the parent; call ``instrument()`` in the parent only, e.g. under
      ``if __name__ == "__main__":`` (a call at import of the main module is merely
      repeated in each child).
    - Instances sharing an id must share histogram buckets: your own pool named e.g.
      ``"asyncio"`` with custom buckets would make the creation of asyncio's default
      executor fail with ``ValueError``.  Use ids of your own for such pools.
    - The stand-ins accept executor_exporter's extra keywords (``executor_id``, ...); code
      that passes them to ``concurrent.futures.ThreadPoolExecutor`` fails once
      uninstrumented: pass them to :class:`executor_exporter.ThreadPoolExecutor` instead.
    """
    global _patch
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a CollectorRegistry, not {type(registry).__name__}")
    _check_id("thread_id", thread_id)
    _check_id("process_id", process_id)
    args = (registry, thread_id, process_id)
    with _lock:
        if _patch is not None:
            old = _patch.args
            if old[0] is not registry or old[1:] != args[1:]:
                warnings.warn(
                    "executor_exporter is already instrumented, with other arguments; "
                    "call uninstrument() first to change them",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        thread = _stand_in(_InstrumentedThreadPool, _STDLIB_THREAD_POOL, thread_id or "", registry)
        process = _stand_in(
            _InstrumentedProcessPool, _STDLIB_PROCESS_POOL, process_id or "", registry
        )
        targets: list[tuple[ModuleType, str, type]] = [
            (concurrent.futures.thread, "ThreadPoolExecutor", thread),
            (concurrent.futures.process, "ProcessPoolExecutor", process),
            (concurrent.futures, "ThreadPoolExecutor", thread),
            (concurrent.futures, "ProcessPoolExecutor", process),
        ]
        # The version test is for mypy: the module is absent from the stubs before 3.14.
        if (
            sys.version_info >= (3, 14)  # pragma: py-gte-314
            and _STDLIB_INTERPRETER_POOL is not None
        ):
            interp = _stand_in(
                _InstrumentedInterpreterPool, _STDLIB_INTERPRETER_POOL, thread_id or "", registry
            )
            targets += [
                (concurrent.futures.interpreter, "InterpreterPoolExecutor", interp),
                (concurrent.futures, "InterpreterPoolExecutor", interp),
            ]
        # vars(): the package's lazy __getattr__ must not run (nor cache) to read them.
        saved = [(module, name, vars(module).get(name, _MISSING)) for module, name, _ in targets]
        for module, name, replacement in targets:
            setattr(module, name, replacement)
        _patch = _Patch(args, saved)


def uninstrument() -> None:
    """Undo :func:`instrument`: the modules hold exactly the objects they held before it.

    An attribute that ``concurrent.futures`` had not yet loaded lazily is removed again.
    Pools already created, and classes that captured a stand-in, stay instrumented.  Does
    nothing when not instrumented.
    """
    global _patch
    with _lock:
        if _patch is None:
            return
        for module, name, previous in reversed(_patch.saved):
            if previous is _MISSING:
                vars(module).pop(name, None)
            else:
                setattr(module, name, previous)
        _patch = None


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _patch is not None


def instrument_asyncio(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    max_workers: int | None = None,
    executor_id: str = "asyncio",
    registry: CollectorRegistry | None = None,
) -> ThreadPoolExecutor:
    """Give an event loop an instrumented default executor, and return it.

    ``loop.run_in_executor(None, ...)`` and ``asyncio.to_thread(...)`` (which uses the
    running loop's default executor) then run in this pool.  It is the one-liner::

        loop.set_default_executor(ThreadPoolExecutor(executor_id="asyncio"))

    with the thread names of asyncio's own default executor (``asyncio_0``, ...).
    ``loop`` defaults to the running loop: call it from a coroutine, e.g. first thing in
    the ``main()`` given to ``asyncio.run``, or pass the loop.  ``max_workers`` defaults
    to the stdlib's (as asyncio's).  The loop shuts the pool down when it closes
    (``asyncio.run`` waits for it).  Call it before the loop made a default executor of its
    own: asyncio does not shut down a default executor that was replaced.
    """
    if loop is None:
        import asyncio

        loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(
        max_workers, thread_name_prefix="asyncio", executor_id=executor_id, registry=registry
    )
    try:
        loop.set_default_executor(pool)
    except BaseException:
        pool.shutdown(wait=False)
        raise
    return pool

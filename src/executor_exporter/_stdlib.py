"""Every use of :mod:`concurrent.futures` internals, in one place.

The drop-in pools subclass the stdlib classes and lean on a few private names to stay
cheap.  Each one is listed here with the versions whose sources it was read in, so that a
reader sees in one file what a new Python can break.  Checked against CPython 3.10.13,
3.11.7, 3.12.1, 3.13.0, 3.13.5, 3.14.10 and 3.15.2.

On an interpreter outside that list, or where one of the names below has moved,
:data:`KNOWN` is false: the pools then take a path built on public API only (the one the
proxy takes), behave exactly like the stdlib's, and :func:`check` warns once.  Users force
that path with ``EXECUTOR_EXPORTER_FALLBACK=1`` (:data:`FALLBACK_ENV`); tests also set
:data:`KNOWN` to False, as on an unknown interpreter.
"""

from __future__ import annotations

import concurrent.futures.process as _process
import concurrent.futures.thread as _thread
import multiprocessing
import os
import sys
import threading
import warnings
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import Any

#: The minor versions whose internals were read (see each name below).
CHECKED_VERSIONS = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14), (3, 15))

# -- process.py ---------------------------------------------------------------------------

#: ``_CallItem(work_id, fn, args, kwargs)`` (3.10-3.15): what the parent's manager thread
#: pickles onto the call queue, unpickled in the worker by this module-level name, with
#: its fields in ``__dict__``.  Our workers install a subclass under that name (see
#: ``_child._CallItem``) to turn our call tuples into recorded calls.
CallItem: Any = getattr(_process, "_CallItem", None)

#: ``_process_chunk(fn, chunk)`` (3.10-3.15): ``ProcessPoolExecutor.map`` submits
#: ``partial(_process_chunk, fn)`` with one argument, the chunk: a tuple of argument
#: tuples (``_get_chunks`` before 3.14, ``itertools.batched`` from 3.14).  Our ``submit``
#: recognises it and sends the chunk as a recorded chunk instead.
process_chunk: Any = getattr(_process, "_process_chunk", None)

#: ``_threads_wakeups`` (3.9-3.15): a WeakKeyDictionary, every live manager thread of
#: this process to its ``_ThreadWakeup``, which ``_python_exit`` wakes at interpreter exit
#: (the workers' exit too: ``multiprocessing`` runs ``threading._shutdown`` there).
#: ``wakeup()`` takes the wakeup's lock (3.12+), so a worker forked while a thread of the
#: parent held one inherits it locked and hangs at its own exit; see forget_parent_wakeups.
_threads_wakeups: Any = getattr(_process, "_threads_wakeups", None)


def forget_parent_wakeups() -> None:
    """In a new worker: drop the wakeups of the parent's pools, inherited under fork.

    Their manager threads do not exist in the child, so waking them there is useless,
    and it can hang the worker at exit for ever (a wakeup lock held by another thread of
    the parent when it forked: the stdlib's own pools do that).  The worker's own pools,
    should a task start one, register afterwards and are woken as usual.
    """
    if _threads_wakeups is not None:
        _threads_wakeups.clear()


# -- _base.py: Future ---------------------------------------------------------------------

#: The states in which a future has run, or is running, its done callbacks (3.10-3.15).
#: ``_state``, ``_exception`` and ``_done_callbacks`` (a list) are read or appended to
#: without the future's lock on the process submit path (see ``process._ProcessState``).
SETTLED_STATES = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)
FINISHED_STATE = FINISHED

# -- thread.py --------------------------------------------------------------------------------

#: ``_WorkItem.run`` (3.10-3.15): what a worker thread calls on each item of the work queue,
#: ``run()`` before 3.14 and ``run(ctx)`` from 3.14.  It reads ``self.future`` and
#: ``self.fn, self.args, self.kwargs`` (before 3.14) or ``self.task`` (from 3.14), calls
#: ``future.set_running_or_notify_cancel()``, the call, then ``future.set_result()`` or
#: ``future.set_exception()``.  A broken pool (``_initializer_failed``) calls
#: ``set_exception`` on each queued item's ``future``, ``shutdown(cancel_futures=True)``
#: its ``cancel()``.  Our thread pool queues items of its own that run with this very
#: function (see ``_work_item``).
work_item_run: Any = getattr(getattr(_thread, "_WorkItem", None), "run", None)

#: Whether ``_WorkItem(future, task)`` and ``submit`` resolve the call into a task through
#: ``self._resolve_work_item_task(fn, args, kwargs)`` (3.14-3.15), rather than
#: ``_WorkItem(future, fn, args, kwargs)`` (3.10-3.13).
WORK_ITEM_TAKES_TASK = sys.version_info >= (3, 14)

#: ``_global_shutdown_lock`` and ``_shutdown`` (3.10-3.15), module globals: ``submit``
#: holds the lock, with the pool's ``_shutdown_lock``, while it checks the pool's
#: ``_broken`` and ``_shutdown`` and the module's ``_shutdown`` (interpreter exit), then puts
#: the item on ``_work_queue`` and calls ``_adjust_thread_count()``.
global_shutdown_lock: Any = getattr(_thread, "_global_shutdown_lock", None)
_THREAD_POOL_NAMES = ("_shutdown_lock", "_broken", "_shutdown", "_work_queue") + (
    ("_resolve_work_item_task",) if WORK_ITEM_TAKES_TASK else ()
)


def thread_pool_is_known(pool: object) -> bool:
    """Whether this thread pool, once built by the stdlib, has the names listed above."""
    return all(hasattr(pool, name) for name in _THREAD_POOL_NAMES) and callable(
        getattr(pool, "_adjust_thread_count", None)
    )


# ``ThreadPoolExecutor.prepare_context(initializer, initargs)`` (3.14-3.15), a public name
# though not in the docs: the classmethod the constructor calls for ``(create_context,
# resolve_task)``; ``InterpreterPoolExecutor`` is built on it, and so is ours (see
# ``interpreter``).  Not a private name, so it is not part of KNOWN.

# -- executor attributes --------------------------------------------------------------------
# ``_max_workers`` (thread and process pools, 3.10-3.15) and ``_mp_context`` (process
# pools, 3.10-3.15) are read once, after the stdlib constructor has chosen them.
# ``_executor_manager_thread`` (process pools, 3.9-3.15): started with the first worker,
# it joins every worker before it ends; ``shutdown()`` sets it to None.


def has_manager_thread(pool: object) -> bool:
    """Whether ``manager_thread()`` can find this process pool's manager thread."""
    return hasattr(pool, "_executor_manager_thread")


def manager_thread(pool: object) -> threading.Thread | None:
    """The process pool's manager thread, None before the first submit or after shutdown."""
    thread = getattr(pool, "_executor_manager_thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def _layout_is_known() -> bool:
    if sys.version_info[:2] not in CHECKED_VERSIONS:
        return False
    if CallItem is None or process_chunk is None:
        return False
    if work_item_run is None or global_shutdown_lock is None:
        return False
    if not isinstance(getattr(_thread, "_shutdown", None), bool):
        return False
    if work_item_run.__code__.co_argcount != (2 if WORK_ITEM_TAKES_TASK else 1):
        return False
    future: Future[None] = Future()
    fields = ("_state", "_exception", "_done_callbacks")
    if not all(hasattr(future, name) for name in fields):
        return False
    return isinstance(future._done_callbacks, list)  # type: ignore[attr-defined]


#: Whether this interpreter's internals are the ones listed above.
KNOWN = _layout_is_known()

_warned = False
_warn_lock = threading.Lock()


#: The environment variable that forces the public-API path for the pools made while it
#: is set: ``1`` (or ``true``, ``yes``, ``on``).  Read by each pool's constructor in the
#: process that makes the pool; a process pool's workers follow their parent's choice,
#: whatever their own environment says (a forkserver started earlier keeps its own).
FALLBACK_ENV = "EXECUTOR_EXPORTER_FALLBACK"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def fallback_forced() -> bool:
    """Whether :data:`FALLBACK_ENV` asks for the public-API path; a clear error if it is
    set to something that is neither yes nor no (a typo should not go unnoticed)."""
    value = os.environ.get(FALLBACK_ENV, "").strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ValueError(
        f"{FALLBACK_ENV}={os.environ[FALLBACK_ENV]!r}: set it to 1 to force the public-API "
        "path, or to 0 (or leave it unset) for the default"
    )


def check() -> bool:
    """Whether a pool made now may use the internals: :data:`KNOWN`, unless
    :data:`FALLBACK_ENV` forces the public-API path.  Warns once (a ``RuntimeWarning``)
    when the internals are unknown; a forced fallback is a choice, and says nothing."""
    global _warned
    if fallback_forced():
        return False
    if KNOWN:
        return True
    with _warn_lock:
        if not _warned:
            _warned = True
            version = ".".join(map(str, sys.version_info[:3]))
            warnings.warn(
                f"executor_exporter does not know the concurrent.futures internals of "
                f"Python {version}; its pools use public API only (slower process pools; "
                "the numbers stay true)",
                RuntimeWarning,
                stacklevel=3,
            )
    return False


def max_workers(pool: object) -> int:
    """The pool size the stdlib constructor settled on."""
    value = getattr(pool, "_max_workers", None)
    if isinstance(value, int):
        return value
    # The stdlib's default, for a layout that moved the attribute.
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    if isinstance(pool, _process.ProcessPoolExecutor):
        return cpus
    return min(32, cpus + 4)


def mp_context(pool: object, given: Any, max_tasks_per_child: int | None) -> Any:
    """The multiprocessing context the stdlib constructor picked for ``pool``."""
    ctx = getattr(pool, "_mp_context", None)
    if ctx is not None:
        return ctx
    if given is not None:
        return given
    # What the stdlib picks (3.11-3.15): spawn when workers are replaced, else the default.
    if max_tasks_per_child is not None:
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context()

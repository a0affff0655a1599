"""A worker forked while another thread held a pool's wakeup lock still exits.

The hang this reproduces (seen once in six runs of the suite on 3.14.10): a worker
forked by one pool inherits ``concurrent.futures.process._threads_wakeups``, the
parent's table of every live pool's manager-thread wakeup.  At its own exit the worker
runs the stdlib's ``_python_exit``, which calls ``wakeup()`` on each of them, and
``wakeup()`` takes the wakeup's lock (3.12+).  Had another thread of the parent held one
of those locks at the moment of the fork (a manager thread closing its wakeup at the end
of a ``shutdown(wait=False)``, a ``submit`` or ``shutdown`` of another pool), the child's
copy is locked forever: the worker never exits, and the parent, joining its manager
thread at interpreter exit, waits for it forever.

The stdlib's own pool does the same in the same situation (the second test shows it);
ours forgets the parent's wakeups when a worker starts (``_stdlib.forget_parent_wakeups``).
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process as cfp
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import wait
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from executor_exporter import ProcessPoolExecutor

pytestmark = pytest.mark.skipif(
    not hasattr(cfp._ThreadWakeup(), "_lock"),
    reason="the wakeup has no lock before 3.12 (nothing to inherit locked)",
)

FORK = mp.get_context("fork")
EXIT_SECONDS = 10.0


@contextmanager
def another_pool_mid_wakeup() -> Iterator[None]:
    """While inside, a live stdlib pool's wakeup lock is held, as by a thread in
    ``wakeup()`` or ``close()``: whatever forks meanwhile inherits it locked."""
    other = cf.ProcessPoolExecutor(1, mp_context=FORK)
    try:
        other.submit(int).result()  # its manager thread runs: its wakeup is in the table
        with other._executor_manager_thread_wakeup._lock:  # type: ignore[attr-defined]
            yield
    finally:
        other.shutdown(wait=True)


def workers_exit_after_shutdown(make_pool: Callable[[], Any]) -> bool:
    """Fork a pool's worker inside ``another_pool_mid_wakeup``, shut the pool down, and
    say whether the worker exited; a worker that did not is killed."""
    with another_pool_mid_wakeup():
        pool = make_pool()
        pool.submit(int).result()  # forks the worker while the lock is held
    processes = list(pool._processes.values())
    pool.shutdown(wait=False)
    # The sentinel, not exitcode: the manager thread may reap the worker meanwhile.
    hung = [p for p in processes if not wait([p.sentinel], timeout=EXIT_SECONDS)]
    for p in hung:
        with suppress(ProcessLookupError):  # it may exit at the last moment
            os.kill(p.pid, signal.SIGKILL)
    pool.shutdown(wait=True)
    return not hung


def test_a_worker_of_ours_exits_though_forked_while_a_wakeup_lock_was_held() -> None:
    registry = CollectorRegistry()
    assert workers_exit_after_shutdown(
        lambda: ProcessPoolExecutor(1, mp_context=FORK, registry=registry)
    )


def test_the_stdlibs_worker_hangs_at_exit_in_that_situation() -> None:
    # Shows that the first test sets up the real hazard: the stdlib's worker, forked the
    # same way, never gets past _python_exit (it is killed after EXIT_SECONDS).
    assert not workers_exit_after_shutdown(lambda: cf.ProcessPoolExecutor(1, mp_context=FORK))

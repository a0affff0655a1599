"""``terminate_workers()`` / ``kill_workers()`` (Python 3.14+) on our process pool.

Each case drives the stdlib's pool and ours the same way and compares what the caller
sees (futures, later submits); then it polls our numbers for a few seconds: nothing
queued or running, no worker, every submitted call settled exactly once (the calls
that were running failed, the ones the forced shutdown cancelled are cancelled), later
submits counted as rejected and never as submitted, the invariants, and the exposition
agreeing with ``stats()``.

NB: futures cancelled by that shutdown stay ``CANCELLED`` (not ``CANCELLED_AND_NOTIFIED``)
once the manager thread is gone, so ``concurrent.futures.wait()`` would never report
them done: ``done()`` is polled instead.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import proc_tasks as t
import py314_tasks as pt
from executor_exporter import ExecutorStats, ProcessPoolExecutor
from helpers import assert_invariants, wait_until

HAS_FORCE_SHUTDOWN = sys.version_info >= (3, 14)
needs_314 = pytest.mark.skipif(
    not HAS_FORCE_SHUTDOWN,
    reason="ProcessPoolExecutor.terminate_workers() and kill_workers() are new in Python 3.14",
)

METHODS = ["fork", "spawn", "forkserver"]
OPS = ["terminate_workers", "kill_workers"]
PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"
ID = "forced"
TIMEOUT = 30.0
SETTLE = 5.0  # seconds our numbers may take to settle once the workers are gone
_PROCESS_CHUNK = getattr(cf.process, "_process_chunk", None)
# What a future running or pending in a forcibly shut down pool ends with.
BROKEN = (
    BrokenProcessPool,
    "A process in the process pool was terminated abruptly while the future was "
    "running or pending.",
)

Outcome = tuple[Any, ...]


# -- driving both pools ------------------------------------------------------------------


class Pools:
    """Makes the stdlib pool and ours the same way, ours exported to ``registry``."""

    def __init__(self, method: str, registry: CollectorRegistry) -> None:
        self.ctx = mp.get_context(method)
        self.registry = registry

    def std(self, max_workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers, mp_context=self.ctx)

    def ours(self, max_workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers, mp_context=self.ctx, executor_id=ID, registry=self.registry
        )


@pytest.fixture(params=METHODS)
def pools(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Pools:
    return Pools(request.param, registry)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """Where the blocking tasks mark their start; released at teardown in any case."""
    yield tmp_path
    for sub in tmp_path.iterdir():
        if sub.is_dir():
            pt.release(str(sub))


def wait_done(futures: list[cf.Future[Any]], timeout: float = TIMEOUT) -> None:
    """Poll ``done()`` (``cf.wait`` never sees a future the forced shutdown cancelled)."""
    wait_until(lambda: all(f.done() for f in futures), timeout)


def future_outcome(future: cf.Future[Any]) -> Outcome:
    """What a caller sees of a done future."""
    assert future.done()
    if future.cancelled():
        return ("cancelled",)
    exc = future.exception(timeout=0)
    if exc is None:
        return ("result", future.result())
    return (type(exc), str(exc))


def call_outcome(call: Callable[[], Any]) -> Outcome:
    """What ``call`` raises (a submit or a map after the forced shutdown), else accepted."""
    try:
        call()
    except Exception as exc:
        return (type(exc), str(exc))
    return ("accepted",)


def later_outcomes(pool: cf.ProcessPoolExecutor) -> list[Outcome]:
    """Submits after the forced shutdown: one ``submit``, one buffered ``map`` (which
    submits its first call at once)."""
    return [
        call_outcome(lambda: pool.submit(t.square, 1)),
        call_outcome(lambda: pool.map(t.square, range(3), buffersize=1)),
    ]


def rejections(outcomes: list[Outcome]) -> tuple[int, int]:
    """(shutdown, broken) rejections the stdlib's exceptions mean: BrokenProcessPool
    (a BrokenExecutor) is ``broken``; the other RuntimeError is ``shutdown``."""
    assert all(o[0] in (RuntimeError, BrokenProcessPool) for o in outcomes), outcomes
    broken = sum(o[0] is BrokenProcessPool for o in outcomes)
    return len(outcomes) - broken, broken


class Recorder:
    """Stands in for ``pool.submit`` (``Executor.map`` calls ``self.submit``): keeps
    each call's future and how many items it carries (a map chunk holds several)."""

    def __init__(self, pool: cf.ProcessPoolExecutor) -> None:
        self.calls: list[tuple[cf.Future[Any], int]] = []
        self._submit = pool.submit
        pool.submit = self.submit  # type: ignore[method-assign]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future = self._submit(fn, *args, **kwargs)
        chunk = isinstance(fn, partial) and fn.func is _PROCESS_CHUNK
        self.calls.append((future, len(args[0]) if chunk else 1))
        return future

    def futures(self) -> list[cf.Future[Any]]:
        return [f for f, _ in self.calls]


# -- checking our numbers ----------------------------------------------------------------


def settled(pool: ProcessPoolExecutor, timeout: float = SETTLE) -> ExecutorStats:
    """Poll until nothing is queued or running, no worker is left, and every submitted
    call is settled; fail with the last reading after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        s = pool.stats()
        if (s.running, s.queued, s.workers, s.workers_max) == (0, 0, 0, 0) and (
            s.submitted == s.completed + s.failed + s.cancelled
        ):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled {timeout}s after the forced shutdown: {s}")
        time.sleep(0.01)


def exposition(
    registry: CollectorRegistry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of our series set, as ``generate_latest`` writes it."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if (labels.pop("executor", None), labels.pop("executor_type", None)) != (
                ID,
                PROCESS_TYPE,
            ):
                continue
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def check_exposition(registry: CollectorRegistry, s: ExecutorStats) -> None:
    """The scraped text agrees with ``stats()``."""
    got = exposition(registry)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    seen = {
        "max_workers_total": value("python_executor_max_workers_total"),
        "initialized": value("python_executor_initialized_workers_total"),
        "submitted": value("python_executor_submitted_tasks_total"),
        "queued": value("python_executor_queued_tasks"),
        "running": value("python_executor_running_tasks_total"),
        "completed": value("python_executor_tasks_duration_seconds_count", result="completed"),
        "failed": value("python_executor_tasks_duration_seconds_count", result="failed"),
        "cancelled": value("python_executor_cancelled_tasks_total"),
        "rejected_shutdown": value("python_executor_rejected_tasks_total", reason="shutdown"),
        "rejected_broken": value("python_executor_rejected_tasks_total", reason="broken"),
        "wait_count": value("python_executor_task_wait_seconds_count"),
        "workers": value("python_executor_workers"),
        "workers_max": value("python_executor_workers_max"),
        "oldest_queued": value("python_executor_oldest_queued_task_age_seconds"),
        "oldest_running": value("python_executor_oldest_running_task_age_seconds"),
    }
    want = {
        "max_workers_total": s.max_workers_total,
        "initialized": s.initialized_workers,
        "submitted": s.submitted,
        "queued": s.queued,
        "running": s.running,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "rejected_shutdown": s.rejected_shutdown,
        "rejected_broken": s.rejected_broken,
        "wait_count": s.wait.count,
        "workers": s.workers,
        "workers_max": s.workers_max,
        "oldest_queued": 0.0,
        "oldest_running": 0.0,
    }
    assert seen == want


def check_final(
    pool: ProcessPoolExecutor,
    registry: CollectorRegistry,
    *,
    started: int,
    later: list[Outcome],
    **expected: int,
) -> ExecutorStats:
    """Our numbers once settled: ``expected`` exactly, ``started`` calls observed in the
    wait histogram (the others failed without starting), rejections as ``later`` shows,
    stable, the invariants, the exposition; no worker process left."""
    s = settled(pool)
    rejected_shutdown, rejected_broken = rejections(later)
    got = {name: getattr(s, name) for name in expected}
    assert got == expected, s
    assert (s.rejected_shutdown, s.rejected_broken) == (rejected_shutdown, rejected_broken), s
    assert s.wait.count == started, s
    assert s.oldest_queued_age == s.oldest_running_age == 0, s
    never_started = s.failed - (started - s.completed)
    assert_invariants(s, never_started=never_started)
    check_exposition(registry, s)
    time.sleep(0.3)  # nothing is settled twice later on
    again = pool.stats()
    assert (again.submitted, again.completed, again.failed, again.cancelled) == (
        s.submitted,
        s.completed,
        s.failed,
        s.cancelled,
    ), again
    assert (again.rejected_shutdown, again.rejected_broken) == (
        s.rejected_shutdown,
        s.rejected_broken,
    )
    wait_until(lambda: not mp.active_children(), SETTLE)
    return s


# -- tests -------------------------------------------------------------------------------


def test_force_shutdown_methods_exist_like_stdlib() -> None:
    for op in OPS:
        assert hasattr(ProcessPoolExecutor, op) == hasattr(cf.ProcessPoolExecutor, op)
    assert hasattr(cf.ProcessPoolExecutor, "terminate_workers") == HAS_FORCE_SHUTDOWN


@needs_314
@pytest.mark.parametrize("op", OPS)
def test_force_shutdown_with_calls_running_and_queued(
    pools: Pools, registry: CollectorRegistry, op: str, folder: Path
) -> None:
    """Two workers, eight blocking calls: 0 and 1 run, 2-4 may sit in the call queue
    (the stdlib marks those running: they cannot be cancelled), 5-7 wait in the pool."""
    n = 8

    def scenario(
        pool: cf.ProcessPoolExecutor, where: Path, ours: bool
    ) -> tuple[list[Outcome], list[Outcome], Any, set[int]]:
        where.mkdir()
        fs = [pool.submit(pt.mark_then_wait, i, str(where)) for i in range(n)]
        wait_until(lambda: pt.started_items(str(where)) >= {0, 1}, TIMEOUT)
        if ours:
            assert isinstance(pool, ProcessPoolExecutor)
            wait_until(lambda: pool.stats().running == 2, SETTLE)
            s = pool.stats()
            assert (s.submitted, s.running, s.queued) == (n, 2, n - 2), s
        returned = getattr(pool, op)()
        wait_done(fs)
        states = [future_outcome(f) for f in fs]
        later = later_outcomes(pool)
        pool.shutdown(wait=True)  # a with block's exit, later: must not hang
        return states, later, returned, pt.started_items(str(where))

    expected = scenario(pools.std(2), folder / "std", ours=False)
    pool = pools.ours(2)
    got = scenario(pool, folder / "ours", ours=True)

    for states in (expected[0], got[0]):
        assert states[:2] == [BROKEN, BROKEN], states  # they were running
        assert states[5:] == [("cancelled",)] * 3, states  # never left the pool
        assert set(states[2:5]) <= {BROKEN, ("cancelled",)}, states
    assert got[1] == expected[1]  # later submits: the same exceptions, same words
    assert got[2] is expected[2] is None
    assert got[3] == expected[3] == {0, 1}  # nothing else ever started

    cancelled = got[0].count(("cancelled",))
    check_final(
        pool,
        registry,
        started=2,
        later=got[1],
        submitted=n,
        completed=0,
        failed=n - cancelled,
        cancelled=cancelled,
        initialized_workers=2,
    )


@needs_314
@pytest.mark.parametrize("op", OPS)
def test_force_shutdown_during_a_buffered_chunked_map(
    pools: Pools, registry: CollectorRegistry, op: str, folder: Path
) -> None:
    """One worker runs the first item of chunk 0 (0, 1, 2); chunk 1 (3, 4, 5) waits;
    buffersize=2 holds chunk 2 back.  After the forced shutdown the map iterator tries
    to submit chunk 2 and raises what submit raises."""

    def scenario(
        pool: cf.ProcessPoolExecutor, where: Path, ours: bool
    ) -> tuple[list[Outcome], Outcome, list[Outcome], set[int]]:
        where.mkdir()
        rec = Recorder(pool)
        it = pool.map(pt.mark_then_wait, range(9), [str(where)] * 9, chunksize=3, buffersize=2)
        wait_until(lambda: 0 in pt.started_items(str(where)), TIMEOUT)
        if ours:
            assert isinstance(pool, ProcessPoolExecutor)
            wait_until(lambda: pool.stats().running == 1, SETTLE)
            s = pool.stats()
            assert (s.submitted, s.running, s.queued) == (6, 1, 5), s
        getattr(pool, op)()
        wait_done(rec.futures())
        states = [future_outcome(f) for f in rec.futures()]
        rest = call_outcome(lambda: next(it))
        later = later_outcomes(pool)
        pool.shutdown(wait=True)
        return states, rest, later, pt.started_items(str(where))

    expected = scenario(pools.std(1), folder / "std", ours=False)
    pool = pools.ours(1)
    got = scenario(pool, folder / "ours", ours=True)

    for states in (expected[0], got[0]):
        assert len(states) == 2 and states[0] == BROKEN, states
        assert states[1] in (BROKEN, ("cancelled",)), states
    assert got[1] == expected[1]  # the map's resubmit, refused
    assert got[1][0] in (RuntimeError, BrokenProcessPool), got[1]
    assert got[2] == expected[2]
    assert got[3] == expected[3] == {0}

    cancelled = 3 if got[0][1] == ("cancelled",) else 0
    check_final(
        pool,
        registry,
        started=1,
        later=[got[1], *got[2]],
        submitted=6,
        completed=0,
        failed=6 - cancelled,
        cancelled=cancelled,
    )


@needs_314
@pytest.mark.parametrize("op", OPS)
def test_force_shutdown_of_an_idle_pool(
    pools: Pools, registry: CollectorRegistry, op: str
) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> tuple[list[int], Any, list[Outcome]]:
        results = [pool.submit(t.square, i).result(timeout=TIMEOUT) for i in range(4)]
        results += list(pool.map(t.square, range(4), chunksize=2, buffersize=1))
        returned = getattr(pool, op)()
        wait_until(lambda: not mp.active_children(), TIMEOUT)
        later = later_outcomes(pool)
        pool.shutdown(wait=True)
        return results, returned, later

    expected = scenario(pools.std(2))
    pool = pools.ours(2)
    got = scenario(pool)
    assert got == expected
    assert got[0] == [0, 1, 4, 9, 0, 1, 4, 9]
    check_final(pool, registry, started=8, later=got[2], submitted=8, completed=8, failed=0)


@needs_314
@pytest.mark.parametrize("op", OPS)
def test_force_shutdown_of_a_pool_never_used(
    pools: Pools, registry: CollectorRegistry, op: str
) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> tuple[Any, Any, list[Outcome]]:
        first = getattr(pool, op)()
        second = getattr(pool, op)()
        later = later_outcomes(pool)
        pool.shutdown(wait=True)
        return first, second, later

    expected = scenario(pools.std(2))
    pool = pools.ours(2)
    got = scenario(pool)
    assert got == expected
    s = check_final(pool, registry, started=0, later=got[2], submitted=0, completed=0, failed=0)
    assert (s.initialized_workers, s.max_workers_total) == (0, 2), s


@needs_314
@pytest.mark.parametrize("second", OPS)
@pytest.mark.parametrize("first", OPS)
def test_force_shutdown_called_twice(
    pools: Pools, registry: CollectorRegistry, first: str, second: str, folder: Path
) -> None:
    """The second call, on a pool already forced down, changes nothing."""
    n = 5

    def scenario(
        pool: cf.ProcessPoolExecutor, where: Path, ours: bool
    ) -> tuple[list[Outcome], list[Outcome], tuple[Any, Any]]:
        where.mkdir()
        fs = [pool.submit(pt.mark_then_wait, i, str(where)) for i in range(n)]
        wait_until(lambda: 0 in pt.started_items(str(where)), TIMEOUT)
        if ours:
            assert isinstance(pool, ProcessPoolExecutor)
            wait_until(lambda: pool.stats().running == 1, SETTLE)
        returned = getattr(pool, first)()
        again = getattr(pool, second)()
        wait_done(fs)
        again_after = getattr(pool, second)()
        assert again_after is None
        states = [future_outcome(f) for f in fs]
        later = later_outcomes(pool)
        pool.shutdown(wait=True)
        return states, later, (returned, again)

    expected = scenario(pools.std(1), folder / "std", ours=False)
    pool = pools.ours(1)
    got = scenario(pool, folder / "ours", ours=True)
    assert got[0][0] == expected[0][0]
    assert got[0][0][0] is BrokenProcessPool
    assert got[0][-1] == expected[0][-1] == ("cancelled",)
    assert got[1:] == expected[1:]
    cancelled = got[0].count(("cancelled",))
    check_final(
        pool,
        registry,
        started=1,
        later=got[1],
        submitted=n,
        completed=0,
        failed=n - cancelled,
        cancelled=cancelled,
    )


_TRACKER_SCRIPT = """
import gc
import sys
import threading
import time
import concurrent.futures as cf
from multiprocessing import get_context
from multiprocessing.resource_tracker import _resource_tracker

from prometheus_client import CollectorRegistry

import py314_tasks
from executor_exporter import ProcessPoolExecutor


def main():
    method, which, folder, op, ending = sys.argv[1:]
    ctx = get_context(method)
    registry = CollectorRegistry()  # never scraped
    if which == "std":
        pool = cf.ProcessPoolExecutor(1, mp_context=ctx)
    else:
        pool = ProcessPoolExecutor(1, mp_context=ctx, registry=registry)
    future = pool.submit(py314_tasks.mark_then_wait, 0, folder)
    while not py314_tasks.started_items(folder):
        time.sleep(0.005)
    getattr(pool, op)()
    if ending != "with-at-once":
        while not future.done():
            time.sleep(0.005)
    if ending != "dropped":
        pool.shutdown(wait=True)  # what a with block's exit does
    del pool, future
    gc.collect()
    # Both pools' manager threads end on their own: wait for that, so that neither is
    # caught half-way; then nothing of either pool should be left to the tracker.
    deadline = time.monotonic() + 10
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    gc.collect()
    # What CPython's FailingInitializerResourcesTest does: stop the tracker now, while
    # the process lives on; it complains of every semaphore still registered.
    _resource_tracker._stop()


if __name__ == "__main__":
    main()
"""


@needs_314
@pytest.mark.parametrize("ending", ["with-after-done", "with-at-once", "dropped"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_pool_forced_down_leaves_no_semaphore_to_the_tracker_like_stdlib(
    method: str, op: str, ending: str, tmp_path: Path
) -> None:
    """A call running, the pool forced down, then: a with block's exit once the call's
    future is done, or at once; or the pool dropped without shutdown (the stdlib needs
    none after a forced shutdown).  Once every thread has ended, neither pool leaves the
    resource tracker a semaphore (ours holds one more: its slot lock)."""
    script = tmp_path / "tracker.py"
    script.write_text(_TRACKER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    stderr = {}
    for which in ("std", "ours"):
        where = tmp_path / which
        where.mkdir()
        result = subprocess.run(
            [sys.executable, str(script), method, which, str(where), op, ending],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=Path(t.__file__).parent,
        )
        pt.release(str(where))
        assert result.returncode == 0, result.stderr
        stderr[which] = result.stderr
    assert "leaked" not in stderr["std"], stderr["std"]
    assert "leaked" not in stderr["ours"], stderr["ours"]

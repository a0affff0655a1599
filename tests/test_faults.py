"""Process-pool faults: the stdlib's behaviour, and exact numbers once the dust settles.

Each case runs the same way on ``concurrent.futures.ProcessPoolExecutor`` and on ours
and compares what the caller sees (results, exception types and messages); then it checks
the parent's numbers: counts exact, the invariants of spec section 4, nothing queued or
running, no worker left.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import pickle
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import fault_tasks as ft
from executor_exporter import ExecutorStats, ProcessPoolExecutor, _stdlib
from helpers import assert_exported_invariants, assert_invariants, wait_until

METHODS = ["fork", "spawn", "forkserver"]
PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"
ID = "faults"
TIMEOUT = 30.0

Outcome = tuple[Any, ...]

# 3.14's pickle errors name the object with its address ("<function f at 0x7f...>").
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _words(exc: BaseException) -> str:
    return _ADDRESS.sub(" at 0x...", str(exc))


def _args(exc: BaseException) -> tuple[Any, ...]:
    return tuple(_ADDRESS.sub(" at 0x...", a) if isinstance(a, str) else a for a in exc.args)


def outcome(future: cf.Future[Any]) -> Outcome:
    """What a caller sees of a future: its result, or its exception's type and words."""
    exc = future.exception(timeout=TIMEOUT)
    if exc is None:
        return ("result", future.result())
    return (type(exc), _words(exc), _args(exc))


def map_outcome(results: Iterable[Any]) -> Outcome:
    """The values a map iterator yields, then what it raises (if anything)."""
    values = []
    try:
        for value in results:
            values.append(value)
    except BaseException as exc:  # KeyboardInterrupt/SystemExit from the child too
        return (values, type(exc), _words(exc), _args(exc))
    return (values, None)


def submit_outcome(pool: cf.Executor, fn: Callable[..., Any], *args: Any) -> Outcome:
    """What ``submit`` itself raises (a broken or shut down pool), else None."""
    try:
        pool.submit(fn, *args)
    except BaseException as exc:
        return (type(exc), _words(exc))
    return ("accepted",)


class Pools:
    """Makes the stdlib pool and ours the same way, ours exported to a fresh registry."""

    def __init__(self, method: str, registry: CollectorRegistry) -> None:
        self.ctx = mp.get_context(method)
        self.registry = registry

    def std(self, max_workers: int, **kwargs: Any) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers, mp_context=self.ctx, **kwargs)

    def ours(self, max_workers: int, **kwargs: Any) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers, mp_context=self.ctx, executor_id=ID, registry=self.registry, **kwargs
        )

    def both(
        self, scenario: Callable[[cf.ProcessPoolExecutor], Any], max_workers: int, **kwargs: Any
    ) -> tuple[Any, Any, ProcessPoolExecutor]:
        """Run ``scenario`` in a ``with`` block of each pool; return both observations."""
        with self.std(max_workers, **kwargs) as std:
            expected = scenario(std)
        with self.ours(max_workers, **kwargs) as pool:
            got = scenario(pool)
        return expected, got, pool


def check_settled(
    pool: ProcessPoolExecutor,
    registry: CollectorRegistry,
    *,
    never_started: int = 0,
    **expected: int,
) -> ExecutorStats:
    """After shutdown(wait=True): exact counts, invariants, nothing left in flight."""
    s = pool.stats()
    got = {name: getattr(s, name) for name in expected}
    assert got == expected, s
    assert (s.queued, s.running, s.workers, s.workers_max) == (0, 0, 0, 0), s
    assert s.oldest_queued_age == s.oldest_running_age == 0, s
    assert_invariants(s, never_started=never_started)
    e = assert_exported_invariants(registry, ID, PROCESS_TYPE, never_started=never_started)
    assert (e.submitted, e.completed, e.failed, e.cancelled, e.wait_count) == (
        s.submitted,
        s.completed,
        s.failed,
        s.cancelled,
        s.wait.count,
    ), e
    assert (e.queued, e.running, e.workers, e.workers_max) == (0, 0, 0, 0), e
    assert (e.rejected_shutdown, e.rejected_broken, e.initialized) == (
        s.rejected_shutdown,
        s.rejected_broken,
        s.initialized_workers,
    ), e
    assert not mp.active_children()
    return s


def settle(pool: ProcessPoolExecutor, timeout: float = 20.0, **expected: int) -> ExecutorStats:
    """Poll until the stats show ``expected`` (for work left running after shutdown)."""
    deadline = time.monotonic() + timeout
    while True:
        s = pool.stats()
        if all(getattr(s, k) == v for k, v in expected.items()):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled to {expected}: {s}")
        time.sleep(0.02)


@pytest.fixture(params=METHODS)
def pools(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Pools:
    return Pools(request.param, registry)


@pytest.fixture
def fork_pools(registry: CollectorRegistry) -> Pools:
    return Pools("fork", registry)


# -- initializer ------------------------------------------------------------------------


def test_initializer_raising_breaks_the_pool(pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        fs = [pool.submit(ft.square, i) for i in range(3)]
        seen = [outcome(f) for f in fs]
        return seen, submit_outcome(pool, ft.square, 9)

    expected, got, pool = pools.both(scenario, 2, initializer=ft.init_fail, initargs=(0.3,))
    assert got == expected
    assert {o[0] for o in got[0]} == {BrokenProcessPool}
    assert got[1][0] is BrokenProcessPool
    # No task started: each failed with duration 0 and no wait observation.
    s = check_settled(
        pool,
        registry,
        never_started=3,
        submitted=3,
        completed=0,
        failed=3,
        cancelled=0,
        rejected_broken=1,
        rejected_shutdown=0,
        initialized_workers=0,
    )
    assert s.wait.count == 0
    assert s.failed_duration.buckets[0] == 3
    assert s.failed_duration.sum == 0


# -- pickling ---------------------------------------------------------------------------


def test_unpicklable_argument(pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        lock = threading.Lock()
        first = outcome(pool.submit(ft.square, lock))
        # The lock last, so that no item after it is left for map to cancel.
        by_one = map_outcome(pool.map(ft.square, [1, 2, 3, lock]))
        by_two = map_outcome(pool.map(ft.square, [1, 2, 3, lock], chunksize=2))
        after = outcome(pool.submit(ft.square, 3))  # the pool still works
        return first, by_one, by_two, after

    expected, got, pool = pools.both(scenario, 1)
    assert got == expected
    assert got[0][0] is TypeError and "pickle" in got[0][1]
    assert got[1][:2] == ([1, 4, 9], TypeError)
    assert got[2][:2] == ([1, 4], TypeError)
    assert got[3] == ("result", 9)
    # submit: 1 failed; map by one: 3 + 1; map by two: chunk (3, lock) fails whole; +1.
    check_settled(
        pool,
        registry,
        never_started=4,
        submitted=10,
        completed=6,
        failed=4,
        cancelled=0,
        rejected_broken=0,
        initialized_workers=1,
    )


def test_unpicklable_result(pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        single = outcome(pool.submit(ft.unpicklable_result))
        chunk = map_outcome(pool.map(ft.unpicklable_result, range(3), chunksize=3))
        raised = outcome(pool.submit(ft.raise_holds_a_lock))
        after = outcome(pool.submit(ft.square, 3))
        return single, chunk, raised, after

    expected, got, pool = pools.both(scenario, 1)
    assert got == expected
    assert got[0][0] is TypeError and "pickle" in got[0][1]
    assert got[1][:2] == ([], TypeError)
    assert got[2][0] is TypeError and "pickle" in got[2][1]
    assert got[3] == ("result", 9)
    # The first 4 tasks ran and returned; only sending the result back failed.  The
    # library records such a task where its function ended: completed (see
    # process._Pending.done).  The exception that did not pickle was raised: failed.
    s = check_settled(
        pool,
        registry,
        submitted=6,
        completed=5,
        failed=1,
        cancelled=0,
        initialized_workers=1,
    )
    assert s.wait.count == 6


# -- a worker killed --------------------------------------------------------------------


def test_sigkill_during_submit(pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        fs = [pool.submit(ft.kill_self_soon), pool.submit(ft.square, 2), pool.submit(ft.square, 3)]
        seen = [outcome(f) for f in fs]
        return seen, submit_outcome(pool, ft.square, 4)

    expected, got, pool = pools.both(scenario, 1)
    assert got == expected
    assert {o[0] for o in got[0]} == {BrokenProcessPool}
    assert got[1][0] is BrokenProcessPool
    # One worker: the killed task had started, the two behind it never did.
    s = check_settled(
        pool,
        registry,
        never_started=2,
        submitted=3,
        completed=0,
        failed=3,
        cancelled=0,
        rejected_broken=1,
        rejected_shutdown=0,
        initialized_workers=1,
    )
    assert s.wait.count == 1


def _break_with_work_in_flight(pool: ProcessPoolExecutor) -> list[cf.Future[Any]]:
    """One worker dies while the other runs a call and five more wait: the issue's case."""
    fs = [pool.submit(time.sleep, 5)]
    wait_until(lambda: pool.stats().running == 1, timeout=TIMEOUT)
    fs += [pool.submit(ft.kill_self_soon)] + [pool.submit(ft.square, i) for i in range(5)]
    cf.wait(fs, timeout=TIMEOUT)
    assert all(f.done() for f in fs)
    return fs


@pytest.mark.parametrize("known", [True, False], ids=["known-internals", "public-api"])
def test_a_reading_once_every_future_ended_is_settled(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    # No shutdown, no polling: the first reading after the last future raised must already
    # add up (it waits for the dying workers itself, see _ProcessState.sweep).
    monkeypatch.setattr(_stdlib, "KNOWN", known)
    for _ in range(20):
        pool = ProcessPoolExecutor(
            2, mp_context=mp.get_context("fork"), executor_id=ID, registry=registry
        )
        try:
            fs = _break_with_work_in_flight(pool)
            s = pool.stats()
            assert {type(f.exception()) for f in fs} == {BrokenProcessPool}
            assert (s.queued, s.running, s.submitted, s.failed) == (0, 0, 7, 7), s
            assert s.oldest_queued_age == s.oldest_running_age == 0, s
            assert_invariants(s, never_started=5)
        finally:
            pool.shutdown(wait=True)


def test_a_reading_waits_for_dying_workers_only_so_long(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers that never seem gone: the reading gives up after its bound (it does not
    # hang), shows the cut-short calls as not settled yet, and a later one settles them.
    from executor_exporter._shared import SharedSlots

    pool = ProcessPoolExecutor(
        2, mp_context=mp.get_context("fork"), executor_id=ID, registry=registry
    )
    try:
        real_live = SharedSlots.live
        monkeypatch.setattr(SharedSlots, "live", lambda self: 1)
        _break_with_work_in_flight(pool)
        start = time.monotonic()
        s = pool.stats()
        assert time.monotonic() - start < 10  # bounded (0.1 s); generous for loaded hosts
        assert s.queued + s.running > 0, s
        assert s.failed < 7, s
        monkeypatch.setattr(SharedSlots, "live", real_live)
        s = pool.stats()
        assert (s.queued, s.running, s.failed) == (0, 0, 7), s
        assert_invariants(s, never_started=5)
    finally:
        pool.shutdown(wait=True)


def test_sigkill_during_map_chunk(pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        seen = map_outcome(pool.map(ft.kill_self_at, range(20), chunksize=5))
        return seen, submit_outcome(pool, ft.square, 4)

    expected, got, pool = pools.both(scenario, 1)
    assert got == expected
    assert got[0][:2] == (list(range(10)), BrokenProcessPool)
    # Chunks 0-4 and 5-9 done; in chunk 10-14 items 10-12 completed, 13 was killed, 14
    # never started; chunk 15-19 never started.
    s = check_settled(
        pool,
        registry,
        never_started=6,
        submitted=20,
        completed=13,
        failed=7,
        cancelled=0,
        rejected_broken=1,
        initialized_workers=1,
    )
    assert s.wait.count == 14
    assert s.failed_duration.buckets[0] >= 6


def test_unpicklable_function_in_map(fork_pools: Pools, registry: CollectorRegistry) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        return map_outcome(pool.map(lambda x: x, range(6), chunksize=2))

    expected, got, pool = fork_pools.both(scenario, 2)
    assert got == expected
    # AttributeError up to 3.13, PicklingError from 3.14: the stdlib's own words either way.
    assert got[0] == [] and got[1] in (AttributeError, pickle.PicklingError)
    # map cancels what it can of the rest once the first chunk raised: those are
    # cancelled, the others failed without starting.
    s = pool.stats()
    assert s.submitted == 6 and s.completed == 0 and s.wait.count == 0
    assert s.failed + s.cancelled == 6 and s.failed >= 2
    check_settled(pool, registry, never_started=s.failed, submitted=6, initialized_workers=2)


def test_result_that_does_not_unpickle_breaks_the_pool(
    pools: Pools, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        bad = pool.submit(ft.raise_needs_two_args)
        # Held until the pool breaks: terminated while running, or never started.
        held = pool.submit(ft.wait_for_file, str(tmp_path / "never"), 5.0)
        seen = [outcome(bad)[:2], outcome(held)[:2]]
        return seen, submit_outcome(pool, ft.square, 1)

    expected, got, pool = pools.both(scenario, 1)
    assert got == expected
    assert {o[0] for o in got[0]} == {BrokenProcessPool}
    assert got[1][0] is BrokenProcessPool
    s = pool.stats()
    started = s.wait.count  # the held task may or may not have started
    assert started in (1, 2), s
    # The first task raised (failed); the held one failed running or before starting.
    check_settled(
        pool,
        registry,
        never_started=2 - started,
        submitted=2,
        completed=0,
        failed=2,
        cancelled=0,
        rejected_broken=1,
        initialized_workers=1,
    )


def test_worker_killed_while_another_runs(fork_pools: Pools, registry: CollectorRegistry) -> None:
    """The pool breaks: the other worker is terminated mid-task; each task is failed
    once, and nothing stays running.

    fork only: under spawn and forkserver the stdlib's manager thread may not watch a
    worker started after it began waiting, and notices the death only when the held
    task ends (the stdlib pool does the same).
    """
    with fork_pools.ours(2) as pool:
        held = pool.submit(ft.wait_for_file, "/nonexistent/never", 10.0)
        settle(pool, running=1)
        killer = pool.submit(ft.kill_self)
        seen = [outcome(held)[:2], outcome(killer)[:2]]
    assert {o[0] for o in seen} == {BrokenProcessPool}
    s = check_settled(
        pool,
        registry,
        submitted=2,
        completed=0,
        failed=2,
        cancelled=0,
        initialized_workers=2,
    )
    assert s.wait.count == 2
    # The one terminated mid-task ran a while: its duration is not 0.
    assert s.failed_duration.sum > 0


# -- BaseException inside the child ----------------------------------------------------


def test_keyboard_interrupt_and_system_exit_in_child(
    fork_pools: Pools, registry: CollectorRegistry
) -> None:
    def scenario(pool: cf.ProcessPoolExecutor) -> Any:
        ki = outcome(pool.submit(ft.keyboard_interrupt, "stop"))
        se = outcome(pool.submit(ft.system_exit, 3))
        se0 = outcome(pool.submit(ft.system_exit, 0))
        chunk = map_outcome(pool.map(ft.system_exit_at, range(6), chunksize=3))
        after = outcome(pool.submit(ft.square, 4))  # the worker survived
        return ki, se, se0, chunk, after

    expected, got, pool = fork_pools.both(scenario, 1)
    assert got == expected
    assert got[0] == (KeyboardInterrupt, "stop", ("stop",))
    assert got[1] == (SystemExit, "3", (3,))
    assert got[2] == (SystemExit, "0", (0,))
    assert got[3] == ([0, 1, 2], SystemExit, "4", (4,))
    assert got[4] == ("result", 16)
    # 3 submits failed; map: 0-3 completed (3's result is lost with its chunk, as in the
    # stdlib), 4 failed, 5 never started; then one more.
    s = check_settled(
        pool,
        registry,
        never_started=1,
        submitted=3 + 6 + 1,
        completed=4 + 1,
        failed=3 + 2,
        cancelled=0,
        initialized_workers=1,
    )
    assert s.wait.count == 9


# -- max_tasks_per_child ---------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_churn_reuses_slots(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    n = 40
    ctx = mp.get_context("forkserver")  # fork is refused with max_tasks_per_child
    with ProcessPoolExecutor(
        2,
        mp_context=ctx,
        max_tasks_per_child=1,
        initializer=ft.init_record,
        initargs=(str(tmp_path),),
        executor_id=ID,
        registry=registry,
    ) as pool:
        fs = [pool.submit(ft.getpid) for _ in range(n)]
        pids = [f.result(timeout=TIMEOUT) for f in fs]
        mid = pool.stats()
        assert mid.workers is not None and mid.workers <= 2 * 2 + 1
    assert len(set(pids)) == n  # one task per worker process
    started = {int(p.name) for p in tmp_path.iterdir()}
    assert set(pids) <= started
    # 40 workers went through a pool of 2 * 2 + 1 slots: every one claimed a freed slot
    # (a worker without one would run unrecorded, and these counts would fall short).
    check_settled(
        pool,
        registry,
        submitted=n,
        completed=n,
        failed=0,
        cancelled=0,
        initialized_workers=len(started),
    )
    assert pool.stats().wait.count == n


# -- shutdown(wait=False), then shutdown(wait=True) -------------------------------------


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_shutdown_nowait_then_wait(
    fork_pools: Pools, registry: CollectorRegistry, tmp_path: Path, cancel_futures: bool
) -> None:
    gate = tmp_path / "go"

    def scenario(pool: cf.ProcessPoolExecutor, name: str) -> Any:
        path = str(tmp_path / name)
        fs = [pool.submit(ft.wait_for_file, path) for _ in range(8)]
        deadline = time.monotonic() + TIMEOUT
        while sum(f.running() for f in fs) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pool.shutdown(wait=False, cancel_futures=cancel_futures)
        if cancel_futures:
            # The manager thread cancels the calls not yet in the call queue (at most
            # 2 running + 3 queued are not); a second shutdown() before it got to it
            # would clear the request, in the stdlib as here.
            while sum(f.cancelled() for f in fs) < 8 - 2 - 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        rejected = submit_outcome(pool, ft.square, 1)
        Path(path).touch()
        pool.shutdown(wait=True)
        cf.wait([f for f in fs if not f.cancelled()], timeout=TIMEOUT)
        return fs, rejected

    std = fork_pools.std(2)
    std_fs, std_rejected = scenario(std, "std")
    pool = fork_pools.ours(2)
    fs, rejected = scenario(pool, gate.name)
    assert rejected == std_rejected == (RuntimeError, "cannot schedule new futures after shutdown")
    assert all(f.done() for f in fs if not f.cancelled())
    cancelled = sum(f.cancelled() for f in fs)
    if cancel_futures:
        assert 3 <= cancelled <= 6
        assert 3 <= sum(f.cancelled() for f in std_fs) <= 6
    else:
        assert cancelled == 0 == sum(f.cancelled() for f in std_fs)
    for f in fs:
        assert f.cancelled() or f.result() == str(gate)
    # The second shutdown returns at once (the first dropped the manager thread): the
    # numbers settle as the workers finish and exit.
    settle(pool, workers=0, completed=8 - cancelled)
    wait_until(lambda: not mp.active_children(), timeout=TIMEOUT)  # the stdlib's too
    check_settled(
        pool,
        registry,
        submitted=8,
        completed=8 - cancelled,
        failed=0,
        cancelled=cancelled,
        rejected_shutdown=1,
        rejected_broken=0,
        initialized_workers=2,
    )

"""ProcessPoolExecutor: stdlib behaviour under every start method, numbers true in the parent."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import gc
import multiprocessing as mp
import os
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import proc_tasks as t
from executor_exporter import ExecutorStats, ProcessPoolExecutor
from helpers import settle

METHODS = ["fork", "spawn", "forkserver"]


def check_invariants(s: ExecutorStats) -> None:
    """Spec section 4 at quiescence."""
    assert s.submitted == s.queued + s.running + s.completed + s.failed + s.cancelled, s
    assert min(s.queued, s.running, s.completed, s.failed, s.cancelled) >= 0, s
    assert s.wait.sum >= 0 and s.completed_duration.sum >= 0 and s.failed_duration.sum >= 0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(params=METHODS)
def ctx(request: pytest.FixtureRequest) -> mp.context.BaseContext:
    return mp.get_context(request.param)


def test_is_a_stdlib_process_pool(registry: CollectorRegistry) -> None:
    with ProcessPoolExecutor(1, registry=registry) as pool:
        assert isinstance(pool, cf.ProcessPoolExecutor)
        assert pool._max_workers == 1


def test_submit_map_partial_kwargs(
    ctx: mp.context.BaseContext, registry: CollectorRegistry
) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx, executor_id="p", registry=registry) as pool:
        assert pool.submit(t.square, 7).result() == 49
        assert pool.submit(t.add, 1, 2, z=3).result() == 6
        assert pool.submit(functools.partial(t.add, 10), 5).result() == 15
        assert pool.submit(t.echo_kwargs, fn=1, self=2, key=3).result() == {
            "fn": 1,
            "self": 2,
            "key": 3,
        }
        assert list(pool.map(t.square, range(50), chunksize=7)) == [x * x for x in range(50)]
        assert list(pool.map(t.add, [1, 2], [10, 20])) == [11, 22]
    s = pool.stats()
    assert s.submitted == 4 + 50 + 2
    assert s.completed == 56 and s.failed == 0
    assert s.wait.count == 56
    check_invariants(s)


def test_pools_nested_in_a_worker(
    ctx: mp.context.BaseContext, registry: CollectorRegistry
) -> None:
    """Our workers unpickle call items as our own _CallItem: pools that a task starts
    there (the stdlib's, and ours) still run their calls as they should."""
    with ProcessPoolExecutor(1, mp_context=ctx, registry=registry) as pool:
        assert pool.submit(t.squares_in_nested_pools, 6).result() == (36, 36, 1)
    assert pool.stats().completed == 1


def test_initializer_counts_every_worker(
    ctx: mp.context.BaseContext, registry: CollectorRegistry, tmp_path: Path
) -> None:
    with ProcessPoolExecutor(
        2, mp_context=ctx, initializer=t.init_record, initargs=(str(tmp_path),), registry=registry
    ) as pool:
        pids = {pool.submit(t.getpid).result() for _ in range(20)}
    ran_in = {int(p.name) for p in tmp_path.iterdir()}
    assert pids <= ran_in
    assert pool.stats().initialized_workers == len(ran_in)


def test_exception_keeps_remote_traceback(
    ctx: mp.context.BaseContext, registry: CollectorRegistry
) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx, registry=registry) as pool:
        exc = pool.submit(t.raise_at, 7).exception()
        assert type(exc) is ValueError and exc.args == ("bad item 7",)
        assert type(exc.__cause__) is cf.process._RemoteTraceback
        assert "the line the remote traceback must show" in exc.__cause__.tb
        base = pool.submit(t.raise_base, 1).exception()
        assert type(base) is KeyboardInterrupt
    s = pool.stats()
    assert (s.completed, s.failed) == (0, 2)
    check_invariants(s)


def test_map_chunk_stops_at_the_failing_item(registry: CollectorRegistry) -> None:
    with ProcessPoolExecutor(1, executor_id="m", registry=registry) as pool:
        it = pool.map(t.raise_at, range(10), chunksize=5)
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(ValueError, match="bad item 7"):
            next(it)
    s = pool.stats()
    # Chunk 5..9: 5 and 6 complete, 7 fails, 8 and 9 never run (failed, duration 0).
    assert s.submitted == 10
    assert (s.completed, s.failed, s.cancelled) == (7, 3, 0)
    assert s.wait.count == 8
    assert s.failed_duration.buckets[0] >= 2
    check_invariants(s)


def test_map_timeout(registry: CollectorRegistry, tmp_path: Path) -> None:
    """map's timeout raises TimeoutError when a result is late.  The late call waits for
    a file, not for the clock, and the worker is up before the timeout starts: a loaded
    machine can make neither result early or late (a CI run on 3.14 saw the first, a 0 s
    call, miss a 0.5 s timeout while the worker process started)."""
    ready, gate = tmp_path / "ready", tmp_path / "go"
    ready.touch()
    with ProcessPoolExecutor(1, registry=registry) as pool:
        pool.submit(t.square, 0).result(timeout=60)
        it = pool.map(t.wait_for_file, [str(ready), str(gate)], timeout=2.0)
        assert next(it) == str(ready)
        with pytest.raises(cf.TimeoutError) as raised:
            next(it)
        # map's own TimeoutError, not the late call's (which names its file).
        assert raised.value.args == ()
        gate.touch()  # the late call ends: shutdown does not wait out its 30 s
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed, s.cancelled) == (3, 3, 0, 0)


def test_map_rejects_bad_chunksize(registry: CollectorRegistry) -> None:
    with (
        ProcessPoolExecutor(1, registry=registry) as pool,
        pytest.raises(ValueError, match=r"chunksize must be >= 1\."),
    ):
        pool.map(t.square, range(3), chunksize=0)


def test_running_is_one_per_worker_and_wait_ends_at_child_start(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    gate = str(tmp_path / "go")
    with ProcessPoolExecutor(2, executor_id="w", registry=registry) as pool:
        fs = [pool.submit(t.wait_for_file, gate) for _ in range(6)]
        s = settle(pool, running=2)
        # Two run, four wait (the stdlib already calls some of those "running").
        assert (s.running, s.queued) == (2, 4)
        assert sum(f.running() for f in fs) >= 2
        time.sleep(0.2)
        s2 = pool.stats()
        assert s2.oldest_queued_age > s.oldest_queued_age > 0
        assert s2.oldest_running_age > 0.2
        assert s2.busy_seconds > s.busy_seconds
        assert s2.wait.count == 2
        Path(gate).touch()
        cf.wait(fs)
    s = pool.stats()
    assert (s.running, s.queued, s.completed) == (0, 0, 6)
    assert s.oldest_queued_age == s.oldest_running_age == 0
    check_invariants(s)


def test_chunk_of_many_items_is_one_running_task(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    gate = str(tmp_path / "go")
    with ProcessPoolExecutor(1, registry=registry) as pool:
        it = pool.map(t.wait_for_file, [gate] * 100, chunksize=100)
        s = settle(pool, running=1)
        assert (s.submitted, s.running, s.queued) == (100, 1, 99)
        Path(gate).touch()
        assert len(list(it)) == 100
    check_invariants(pool.stats())


def test_cancel_queued_future(registry: CollectorRegistry, tmp_path: Path) -> None:
    gate = str(tmp_path / "go")
    with ProcessPoolExecutor(1, registry=registry) as pool:
        fs = [pool.submit(t.wait_for_file, gate) for _ in range(5)]
        settle(pool, running=1)
        assert fs[-1].cancel()
        assert fs[-1].cancelled()
        assert not fs[0].cancel()  # running: the stdlib refuses too
        with pytest.raises(cf.CancelledError):
            fs[-1].result()
        Path(gate).touch()
    s = pool.stats()
    assert s.cancelled == 1 and s.completed == 4
    assert s.wait.count == 4
    check_invariants(s)


def test_settled_calls_leave_nothing_behind(registry: CollectorRegistry, tmp_path: Path) -> None:
    """Every call leaves the pending set as its future ends, whatever the outcome, and the
    pool keeps no future: a result the user dropped is freed."""
    gate = str(tmp_path / "go")
    with ProcessPoolExecutor(1, registry=registry) as pool:
        blocker = pool.submit(t.wait_for_file, gate)
        settle(pool, running=1)
        # The stdlib sends one call more than there are workers ahead: those can't cancel.
        sent = [pool.submit(t.square, i) for i in range(3)]
        cancelled = pool.submit(t.square, 2)
        assert cancelled.cancel()
        unsent = pool.submit(t.square, lambda: None)  # arguments that do not pickle
        Path(gate).touch()
        results = [pool.submit(t.new_set, i) for i in range(20)]
        refs = [weakref.ref(f.result()) for f in results]
        failed = pool.submit(t.raise_at, 7)
        cf.wait([blocker, unsent, failed, *sent])
        del results
        gc.collect()
        assert [r() for r in refs] == [None] * 20
        assert not pool._ee_state.pending
    s = pool.stats()
    assert (s.completed, s.failed, s.cancelled) == (24, 2, 1)
    check_invariants(s)


def test_a_future_that_ended_before_it_was_watched_is_settled_once(
    registry: CollectorRegistry,
) -> None:
    """watch() adds its callback without the future's lock: a future that ended first
    (its callbacks already run) is settled by watch() itself, and a second settle of the
    same future (the future's own callback racing watch) changes nothing."""
    with ProcessPoolExecutor(1, registry=registry) as pool:
        state = pool._ee_state
        done: cf.Future[int] = cf.Future()
        cancelled: cf.Future[int] = cf.Future()
        done.set_result(1)
        cancelled.cancel()
        for future in (done, cancelled):
            state.watch(future, next(pool._ee_seq), 1, time.monotonic())
        assert not state.pending
        assert pool.stats().cancelled == 1
        state.settle(cancelled)
        assert pool.stats().cancelled == 1


def test_shutdown_cancel_futures(registry: CollectorRegistry, tmp_path: Path) -> None:
    gate = str(tmp_path / "go")
    pool = ProcessPoolExecutor(1, registry=registry)
    fs = [pool.submit(t.wait_for_file, gate) for _ in range(8)]
    settle(pool, running=1)
    Path(gate).touch()
    pool.shutdown(wait=True, cancel_futures=True)
    s = pool.stats()
    assert s.cancelled == sum(f.cancelled() for f in fs) > 0
    assert (s.running, s.queued, s.workers_max, s.workers) == (0, 0, 0, 0)
    check_invariants(s)


@pytest.mark.parametrize("method", METHODS)
def test_worker_killed_mid_map(method: str, registry: CollectorRegistry) -> None:
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context(method), registry=registry)
    with pytest.raises(cf.process.BrokenProcessPool):
        list(pool.map(t.kill_self_at, range(60), chunksize=5))
    with pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(t.square, 1)
    pool.shutdown()
    s = pool.stats()
    assert s.submitted == 60 and s.rejected_broken == 1
    assert (s.running, s.queued) == (0, 0)
    assert s.failed >= 1
    # Started items either completed or failed; the others failed without starting.
    assert s.completed < s.wait.count <= s.completed + s.failed
    check_invariants(s)
    assert not mp.active_children()


def test_worker_exit_breaks_pool_like_stdlib(registry: CollectorRegistry) -> None:
    with ProcessPoolExecutor(1, registry=registry) as pool:
        exc = pool.submit(t.exit_now).exception()
        assert isinstance(exc, cf.process.BrokenProcessPool)
    s = pool.stats()
    assert (s.submitted, s.failed, s.running, s.queued) == (1, 1, 0, 0)
    assert s.wait.count == 1  # it had started
    check_invariants(s)


def test_failing_initializer(registry: CollectorRegistry) -> None:
    with ProcessPoolExecutor(2, initializer=t.init_fail, registry=registry) as pool:
        exc = pool.submit(t.square, 2).exception()
        assert isinstance(exc, cf.process.BrokenProcessPool)
    s = pool.stats()
    assert (s.submitted, s.failed, s.wait.count, s.initialized_workers) == (1, 1, 0, 0)
    check_invariants(s)


def test_unpicklable_argument_like_stdlib(registry: CollectorRegistry) -> None:
    import threading

    with cf.ProcessPoolExecutor(1) as std:
        expected = std.submit(t.square, threading.Lock()).exception()
    with ProcessPoolExecutor(1, registry=registry) as pool:
        got = pool.submit(t.square, threading.Lock()).exception()
        assert pool.submit(t.square, 3).result() == 9  # the pool still works
    assert type(got) is type(expected)
    assert str(got) == str(expected)
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed, s.wait.count) == (2, 1, 1, 1)
    check_invariants(s)


def test_unpicklable_result_like_stdlib(registry: CollectorRegistry) -> None:
    with cf.ProcessPoolExecutor(1) as std:
        expected = std.submit(t.unpicklable_result).exception()
    with ProcessPoolExecutor(1, registry=registry) as pool:
        got = pool.submit(t.unpicklable_result).exception()
        assert pool.submit(t.square, 3).result() == 9
    assert type(got) is type(expected)
    assert str(got) == str(expected)
    check_invariants(pool.stats())


def test_unpicklable_task_like_stdlib(registry: CollectorRegistry) -> None:
    with cf.ProcessPoolExecutor(1) as std:
        expected = std.submit(lambda: 1).exception()
    with ProcessPoolExecutor(1, registry=registry) as pool:
        got = pool.submit(lambda: 1).exception()
    assert type(got) is type(expected)
    check_invariants(pool.stats())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_replaces_workers(registry: CollectorRegistry, tmp_path: Path) -> None:
    with ProcessPoolExecutor(
        1,
        max_tasks_per_child=2,
        initializer=t.init_record,
        initargs=(str(tmp_path),),
        registry=registry,
    ) as pool:
        pids = [pool.submit(t.getpid).result() for _ in range(6)]
    assert len(set(pids)) == 3
    s = pool.stats()
    # The stdlib starts a replacement after the last exit too: it never gets a task.
    started = {int(p.name) for p in tmp_path.iterdir()}
    assert set(pids) <= started
    assert s.initialized_workers == len(started)
    assert (s.completed, s.workers) == (6, 0)
    check_invariants(s)


def test_workers_gauge_follows_processes(registry: CollectorRegistry) -> None:
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("fork"), registry=registry)
    assert pool.stats().workers == 0
    pool.submit(t.square, 1).result()
    s = settle(pool, workers=2)
    assert (s.workers, s.workers_max) == (2, 2)
    pool.shutdown()
    s = pool.stats()
    assert (s.workers, s.workers_max) == (0, 0)


def test_submit_after_shutdown_is_rejected(registry: CollectorRegistry) -> None:
    pool = ProcessPoolExecutor(1, registry=registry)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(t.square, 1)
    # map submits its first chunk at once, like the stdlib: one refused submission.
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.map(t.square, range(10), chunksize=5)
    s = pool.stats()
    assert (s.submitted, s.rejected_shutdown) == (0, 2)


def test_constructor_errors_like_stdlib(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ProcessPoolExecutor(0, registry=registry)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        ProcessPoolExecutor(1, initializer=3, registry=registry)  # type: ignore[arg-type]
    assert (
        registry.get_sample_value(
            "python_executor_max_workers_total",
            {"executor": "", "executor_type": "concurrent.futures.process.ProcessPoolExecutor"},
        )
        is None
    )


def test_metrics_in_the_parent_registry(registry: CollectorRegistry) -> None:
    with ProcessPoolExecutor(2, executor_id="render", registry=registry) as pool:
        list(pool.map(t.square, range(100), chunksize=10))
    labels = {
        "executor": "render",
        "executor_type": "concurrent.futures.process.ProcessPoolExecutor",
    }
    assert registry.get_sample_value("python_executor_submitted_tasks_total", labels) == 100
    assert registry.get_sample_value("python_executor_task_wait_seconds_count", labels) == 100
    assert (
        registry.get_sample_value(
            "python_executor_tasks_duration_seconds_count", {**labels, "result": "completed"}
        )
        == 100
    )
    assert registry.get_sample_value("python_executor_max_workers_total", labels) == 2
    assert registry.get_sample_value("python_executor_running_tasks_total", labels) == 0


_TRACKER_SCRIPT = """
import sys
from multiprocessing import get_context
from multiprocessing.resource_tracker import _resource_tracker

from prometheus_client import CollectorRegistry

import proc_tasks
from executor_exporter import ProcessPoolExecutor

registry = CollectorRegistry()  # its collector keeps the pool's numbers: never scraped
ctx = get_context(sys.argv[1])
init = proc_tasks.init_fail if sys.argv[2] == "failing" else None
pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=init, registry=registry)
try:
    pool.submit(proc_tasks.square, 3).result()
except Exception:
    pass  # the failing initializer broke the pool
pool.shutdown(wait=True)
del pool
# What CPython's FailingInitializerResourcesTest does: stop the tracker now, while
# the process lives on; it complains of every semaphore still registered.
_resource_tracker._stop()
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("initializer", ["none", "failing"])
def test_a_pool_shut_down_leaves_no_semaphore_to_the_tracker(
    method: str, initializer: str, tmp_path: Path
) -> None:
    script = tmp_path / "tracker.py"
    script.write_text(_TRACKER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, str(script), method, initializer],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(t.__file__).parent,
    )
    assert "leaked" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_broken_pool_never_shut_down_frees_its_slot_lock(method: str) -> None:
    # CPython 3.14's test_failed_worker_replacement_breaks_pool: the pool breaks, the test
    # keeps it and its manager thread (the stdlib's tracebacks do too, in cycles), and
    # the resource tracker reports the slot lock leaked unless it is freed at the break.
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context(method), registry=CollectorRegistry())
    name = pool._ee_boot.lock._semlock.name  # what the tracker would report
    semaphore = Path("/dev/shm") / f"sem.{name.lstrip('/')}"
    futures = [pool.submit(t.exit_now)] + [pool.submit(t.square, i) for i in range(3)]
    manager = pool._executor_manager_thread
    for future in futures:
        with pytest.raises(cf.process.BrokenProcessPool):
            future.result(timeout=60)
    manager.join(timeout=60)
    deadline = time.monotonic() + 10
    while semaphore.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert semaphore.parent.is_dir() and not semaphore.exists()
    stats = pool.stats()  # the numbers stay true without the lock
    assert (stats.submitted, stats.queued, stats.running) == (4, 0, 0)
    del pool


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_pool_dropped_unused_frees_its_slot_lock(method: str) -> None:
    # CPython's test_max_tasks_per_child_defaults_to_spawn_context: made, never used, not
    # shut down, dropped; the collector keeps the pool's state (its counters) afterwards.
    registry = CollectorRegistry()
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context(method), registry=registry)
    name = pool._ee_boot.lock._semlock.name
    labels = {
        "executor": pool.executor_id,
        "executor_type": "concurrent.futures.process.ProcessPoolExecutor",
    }
    del pool
    gc.collect()
    assert not (Path("/dev/shm") / f"sem.{name.lstrip('/')}").exists()
    # Still exported: the state outlives the pool, without the lock.
    assert registry.get_sample_value("python_executor_submitted_tasks_total", labels) == 0


def _manager_thread_outlives_shutdown(cls: type[Any]) -> bool:
    with cls(1) as pool:
        pool.submit(t.square, 2).result()
        manager = weakref.ref(pool._executor_manager_thread)
    gc.collect()
    return manager() is not None


def test_shutdown_lets_the_manager_thread_go_as_the_stdlib_does() -> None:
    # The stdlib's manager thread holds a weak reference to the executor whose callback
    # wakes the thread; kept after shutdown, that callback would fire when the executor
    # dies (CPython's test_gh105829_should_not_deadlock_if_wakeup_pipe_full hangs then).
    # Whether the stdlib frees the thread object at once depends on the build (the
    # free-threaded 3.13 keeps it a while): ours must do as the stdlib does here.
    stdlib = _manager_thread_outlives_shutdown(cf.ProcessPoolExecutor)
    assert _manager_thread_outlives_shutdown(ProcessPoolExecutor) is stdlib

"""The proxy over executors whose workers are other processes: stdlib process pools,
loky, dask.distributed and (in a job of its own) mpi4py.

The engines are optional: without one its tests skip, except under ``CI=true`` where
they fail (CI installs them through the ``dev`` extra).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import executor_exporter._remote_task as remote_task
from executor_exporter import ExecutorExporter, InstrumentedExecutorProxy
from executor_exporter._remote import RemoteFuture
from helpers import (
    assert_exported_invariants,
    assert_invariants,
    require_module,
    sample,
    wait_until,
)
from proc_tasks import (
    kill_self_at,
    raise_at,
    raise_base,
    sleep_return,
    square,
    touch_then_wait,
    wait_for_file,
)

HERE = Path(__file__).parent
PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"


def quiescent(proxy: InstrumentedExecutorProxy) -> Any:
    """The proxy's stats once nothing runs or waits any more."""
    wait_until(lambda: (s := proxy.stats()).running == 0 and s.queued == 0, timeout=30)
    return proxy.stats()


# -- engines --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    require_module("distributed")
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: a task raising on purpose is not news
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _stdlib(request: pytest.FixtureRequest) -> cf.Executor:
    return cf.ProcessPoolExecutor(2)


def _loky(request: pytest.FixtureRequest) -> cf.Executor:
    loky = require_module("loky")
    executor: cf.Executor = loky.get_reusable_executor(max_workers=2, reuse=False)
    return executor


def _dask(request: pytest.FixtureRequest) -> cf.Executor:
    client = request.getfixturevalue("dask_client")
    executor: cf.Executor = client.get_executor(pure=False)
    return executor


ENGINES: dict[str, Callable[[pytest.FixtureRequest], cf.Executor]] = {
    "stdlib-process": _stdlib,
    "loky": _loky,
    "dask": _dask,
}


class Pool:
    """An engine's executor behind the proxy, with its registry and labels."""

    def __init__(self, executor: cf.Executor, registry: CollectorRegistry) -> None:
        self.executor = executor
        self.registry = registry
        self.exporter = ExecutorExporter(executor, executor_id="remote", registry=registry)
        self.proxy = InstrumentedExecutorProxy(executor, self.exporter, max_workers=2)
        self.type = self.exporter.executor_type

    def sample(self, name: str, **labels: str) -> float | None:
        return sample(self.registry, name, "remote", self.type, **labels)


@pytest.fixture(params=list(ENGINES))
def pool(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Iterator[Pool]:
    executor = ENGINES[request.param](request)
    p = Pool(executor, registry)
    yield p
    if request.param != "dask":  # the module's cluster outlives the executor
        executor.shutdown(wait=True)


# -- behaviour ------------------------------------------------------------------------


def test_detected_as_remote(pool: Pool) -> None:
    assert pool.exporter.remote
    assert not ExecutorExporter(cf.ThreadPoolExecutor(1), registry=CollectorRegistry()).remote


def test_results_and_map_pass_through(pool: Pool) -> None:
    futures = [pool.proxy.submit(square, i) for i in range(6)]
    assert all(isinstance(f, RemoteFuture) for f in futures)
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(6)]
    assert list(pool.proxy.map(square, range(5), timeout=30)) == [0, 1, 4, 9, 16]
    s = pool.proxy.stats()
    assert_invariants(s)
    assert (s.submitted, s.completed, s.failed, s.wait.count) == (11, 11, 0, 11)


def test_exceptions_pass_through_unchanged(pool: Pool) -> None:
    with pytest.raises(ValueError, match="bad item 7") as info:
        pool.proxy.submit(raise_at, 7).result(timeout=30)
    exc = info.value
    assert remote_task.SPAN_ATTR not in vars(exc)  # our timing rode on it, and is gone
    # The worker-side text of the traceback (where the engine keeps one) shows the
    # task's frame and not ours.
    cause = str(exc.__cause__ or "")
    if cause:
        assert 'raise ValueError(f"bad item {x}")' in cause
        if sys.version_info >= (3, 11):  # 3.10 keeps one wrapper frame
            assert "_remote_task" not in cause
    with pytest.raises(ValueError, match="bad item 3"):
        list(pool.proxy.map(raise_at, range(5), [3] * 5, timeout=30))
    # map cancels the items after the failed one; those already running finish.
    s = quiescent(pool.proxy)
    assert_invariants(s)
    # Item 4 may have finished, or been cancelled before it started; dask also cancels a
    # running call, which then counts failed (it started; the board saw it).
    assert s.failed == 2 or ("distributed" in pool.type and s.failed == 3), s
    assert s.submitted == 6


def test_base_exception_in_a_task_is_failed(pool: Pool) -> None:
    if "distributed" in pool.type:
        pytest.skip("dask takes a BaseException for the death of its worker (KilledWorker)")
    with pytest.raises(KeyboardInterrupt):
        pool.proxy.submit(raise_base, 1).result(timeout=30)
    s = pool.proxy.stats()
    assert (s.failed, s.wait.count, s.running) == (1, 1, 0)


def test_running_is_seen_live_from_the_workers(pool: Pool, tmp_path: Path) -> None:
    release = str(tmp_path / "go")
    blocked = [pool.proxy.submit(wait_for_file, release) for _ in range(2)]
    # Neither future reports running on its own (dask's never do); the board does.
    wait_until(lambda: pool.proxy.stats().running == 2, timeout=30)
    assert all(f.running() for f in blocked)
    time.sleep(0.05)
    s = pool.proxy.stats()
    assert (s.running, s.queued) == (2, 0)
    assert s.oldest_running_age > 0
    assert s.busy_seconds > 0
    assert pool.sample("python_executor_running_tasks_total") == 2
    Path(release).touch()
    assert [f.result(timeout=30) for f in blocked] == [release, release]
    assert not any(f.running() for f in blocked)
    s = pool.proxy.stats()
    assert (s.running, s.queued, s.completed, s.oldest_running_age) == (0, 0, 2, 0)
    assert_exported_invariants(pool.registry, "remote", pool.type)


def test_wait_and_duration_come_from_the_worker(pool: Pool) -> None:
    assert pool.proxy.submit(sleep_return, 0.3).result(timeout=30) == 0.3
    s = pool.proxy.stats()
    assert 0.3 <= s.completed_duration.sum < 5
    assert s.wait.count == 1
    assert s.busy_seconds == pytest.approx(s.completed_duration.sum)


def test_shutdown_rejects_and_workers_max(pool: Pool) -> None:
    assert pool.sample("python_executor_workers_max") == 2
    assert pool.sample("python_executor_workers") is None  # hidden by the executor
    pool.proxy.submit(square, 2).result(timeout=30)
    pool.proxy.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.proxy.submit(square, 3)
    s = pool.proxy.stats()
    assert (s.submitted, s.rejected_shutdown, s.workers_max) == (1, 1, 0)
    assert_invariants(s)


# -- faults (stdlib process pool: the engine every machine has) -----------------------


@pytest.fixture
def one_worker(registry: CollectorRegistry) -> Iterator[Pool]:
    executor = cf.ProcessPoolExecutor(1)
    yield Pool(executor, registry)
    executor.shutdown(wait=True, cancel_futures=True)


def test_cancel_before_start(one_worker: Pool, tmp_path: Path) -> None:
    release = str(tmp_path / "go")
    proxy = one_worker.proxy
    first = proxy.submit(wait_for_file, release)
    wait_until(first.running, timeout=30)
    # The stdlib's call queue holds one more call than workers: fill it first.
    queued = [proxy.submit(square, i) for i in range(3)]
    last = queued[-1]
    waiter = threading.Thread(target=cf.wait, args=([last],))
    waiter.start()
    assert last.cancel()
    assert last.cancelled()
    waiter.join(timeout=10)  # wait() wakes on a cancelled proxy future
    assert not waiter.is_alive()
    assert last in cf.wait([last], timeout=5).done
    with pytest.raises(cf.CancelledError):
        last.result()
    assert not first.cancel()  # running: the stdlib refuses
    Path(release).touch()
    assert [f.result(timeout=30) for f in queued[:-1]] == [0, 1]
    s = proxy.stats()
    assert (s.cancelled, s.completed) == (1, 3)
    assert_invariants(s)


def test_worker_killed_mid_task(one_worker: Pool) -> None:
    proxy = one_worker.proxy
    dying = proxy.submit(kill_self_at, 13, 13)
    behind = proxy.submit(sleep_return, 0.01)
    for f in (dying, behind):
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=30)
    with pytest.raises(BrokenProcessPool):
        proxy.submit(square, 1)
    s = proxy.stats()
    # The killed task started (the board saw it): failed with a wait; the one behind it
    # never started: failed, duration 0, no wait.
    assert (s.failed, s.running, s.queued, s.wait.count) == (2, 0, 0, 1)
    assert s.rejected_broken == 1
    assert_invariants(s, never_started=1)


def test_arguments_that_do_not_pickle(one_worker: Pool) -> None:
    future = one_worker.proxy.submit(square, threading.Lock())
    with pytest.raises((TypeError, pickle.PicklingError)):
        future.result(timeout=30)
    s = one_worker.proxy.stats()
    assert (s.failed, s.wait.count, s.failed_duration.sum) == (1, 0, 0.0)
    assert_invariants(s, never_started=1)


def test_workers_on_another_host(one_worker: Pool, tmp_path: Path) -> None:
    # A worker that cannot open the start board (it runs elsewhere) still reports each
    # call's times with its outcome; only the live view of running calls is missing.
    os.unlink(one_worker.exporter._state.board.path)  # type: ignore[attr-defined]
    started, release = str(tmp_path / "started"), str(tmp_path / "go")
    f = one_worker.proxy.submit(touch_then_wait, started, release)
    # Not f.running(): the stdlib marks a call running once it is queued to the
    # workers, which can be well before a slow-starting child picks it up.
    wait_until(lambda: os.path.exists(started), timeout=30)
    time.sleep(0.2)
    s = one_worker.proxy.stats()
    assert (s.running, s.queued) == (0, 1)
    Path(release).touch()
    f.result(timeout=30)
    s = one_worker.proxy.stats()
    assert (s.running, s.queued, s.completed, s.wait.count) == (0, 0, 1, 1)
    assert s.completed_duration.sum >= 0.1  # it ran through the 0.2 s pause


# -- clocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-100.0, 100.0])
def test_clock_skew_is_clamped(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    # A worker whose wall clock is off by `skew` seconds; run in threads (remote=True)
    # so that the worker's clock can be faked.
    monkeypatch.setattr(remote_task, "time", lambda: time.time() + skew)
    with cf.ThreadPoolExecutor(1) as executor:
        exporter = ExecutorExporter(executor, registry=registry, remote=True)
        proxy = InstrumentedExecutorProxy(executor, exporter, 1)
        assert proxy.submit(square, 3).result() == 9
    s = proxy.stats()
    assert s.wait.count == 1
    if skew < 0:  # started "before" it was submitted
        assert s.wait.sum == 0.0
    else:
        assert s.wait.sum >= 100.0
    assert 0.0 <= s.completed_duration.sum < 1.0
    assert_invariants(s)


def test_remote_must_be_a_bool(registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError, match="remote must be a bool"):
        ExecutorExporter(cf.ThreadPoolExecutor(1), registry=registry, remote="yes")  # type: ignore[arg-type]


def test_board_is_removed_with_the_exporter(registry: CollectorRegistry) -> None:
    executor = cf.ThreadPoolExecutor(1)
    exporter = ExecutorExporter(executor, registry=registry, remote=True)
    path = exporter._state.board.path  # type: ignore[attr-defined]
    assert os.path.exists(path)
    del exporter
    executor.shutdown()
    del executor
    list(registry.collect())  # the collector retires the state it held
    gc.collect()
    assert not os.path.exists(path)


# -- dask specifics -------------------------------------------------------------------


def test_dask_task_keys_keep_the_function_name(
    dask_client: Any, registry: CollectorRegistry
) -> None:
    executor = dask_client.get_executor(pure=False)
    p = Pool(executor, registry)
    assert p.proxy.submit(square, 4).result(timeout=30) == 16
    keys = [str(f.key) for f in executor._futures]
    assert keys
    assert all(k.startswith("square-") for k in keys), keys


def test_dask_workers_on_another_host_post_starts_as_events(
    dask_client: Any, registry: CollectorRegistry, tmp_path: Path
) -> None:
    p = Pool(dask_client.get_executor(pure=False), registry)
    # Workers that cannot open the board (as on another host) log each start as a dask
    # event, which reaches this client through the scheduler.
    os.unlink(p.exporter._state.board.path)  # type: ignore[attr-defined]
    release = str(tmp_path / "go")
    blocked = [p.proxy.submit(wait_for_file, release) for _ in range(2)]
    wait_until(lambda: p.proxy.stats().running == 2, timeout=30)
    assert all(f.running() for f in blocked)
    assert p.proxy.stats().queued == 0
    Path(release).touch()
    assert [f.result(timeout=30) for f in blocked] == [release, release]
    s = p.proxy.stats()
    assert (s.running, s.queued, s.completed, s.wait.count) == (0, 0, 2, 2)
    assert_invariants(s)
    # Events leave with their call (or at the next read, if they came after it ended).
    state = p.exporter._state
    wait_until(lambda: bool(p.proxy.stats()) and not state.posted, timeout=5)  # type: ignore[attr-defined]


# -- mpi4py ---------------------------------------------------------------------------


def test_mpi4py_pool_executor(tmp_path: Path) -> None:
    require_module("mpi4py")
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ)
    # mpich's singleton init finds mpiexec (installed by the mpich wheel) on PATH.
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(HERE / "mpi_job.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["detected"] is True
    assert report["results"] == [i * i for i in range(8)]
    assert report["error"] == "bad item 7"
    assert report["live"] == {"running": 2, "queued": 1}
    final = report["final"]
    assert final["submitted"] == 8 + 1 + 3
    assert (final["completed"], final["failed"], final["running"], final["queued"]) == (
        11,
        1,
        0,
        0,
    )
    assert final["wait_count"] == 12


def test_dask_event_is_logged_only_inside_a_dask_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, Any]] = []

    class Worker:
        def log_event(self, topic: str, msg: Any) -> None:
            logged.append((topic, msg))

    class Distributed:
        worker: Worker | None = None

        def get_worker(self) -> Worker:
            if self.worker is None:
                raise ValueError("No worker found")
            return self.worker

    fake = Distributed()
    task = remote_task.RemoteTask(square, (3,), {}, 5, "", 1.0, "topic-x")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as good as not loaded
    assert task()[2] == 9  # nothing imported, nothing logged
    monkeypatch.setitem(sys.modules, "distributed", fake)
    assert task()[2] == 9  # loaded, but not in a worker
    fake.worker = Worker()
    t_start, _, result = task()
    assert result == 9
    assert logged == [("topic-x", [5, t_start])]

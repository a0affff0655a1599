"""Load and memory: a million tasks, a killed worker, a thousand short-lived executors.

Every long test is marked ``slow``.  The figures each test measures (tasks/s, memory
growth, scrape time) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import math
import multiprocessing
import os
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import stress_tasks as t
from executor_exporter import (
    ExecutorExporter,
    InstrumentedExecutorProxy,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from executor_exporter.collector import collector_for
from helpers import (
    PACKAGE_DIR,
    THREAD_TYPE,
    Gate,
    assert_exported_invariants,
    assert_invariants,
    sample,
)

PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"

# 1,000,000 tasks fit well within two minutes on the 2-core development machine: measured
# 30 to 53 s (19,000 to 33,000 tasks/s, the scraper running; the machine is shared), so
# the full number is used.
LOAD_TASKS = 1_000_000


# -- helpers ------------------------------------------------------------------------------

_MONOTONIC_SUFFIXES = ("_bucket", "_count", "_sum")
_Key = tuple[str, tuple[tuple[str, str], ...]]


class Scraper:
    """Collects a registry in a loop on a thread of its own and checks every scrape.

    Counter samples (and histogram buckets, counts and sums) must never go down from
    one scrape to the next, no sample may be NaN, no gauge negative.  It also records
    how far ``submitted - (queued + running + finished + cancelled)`` strays from 0 for
    one series set (the spec allows a small transient skew): ``max_skew`` is the largest
    (signed), ``worst`` that scrape's numbers.  Leaving the ``with`` block stops the
    thread and takes one last scrape, at quiescence.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        executor: str,
        executor_type: str = THREAD_TYPE,
        interval: float = 0.01,
    ) -> None:
        self.registry = registry
        self.base = {"executor": executor, "executor_type": executor_type}
        self.interval = interval
        self.last: dict[_Key, float] = {}
        self.problems: list[str] = []
        self.problem_count = 0
        self.scrapes = 0
        self.max_skew = 0.0
        self.worst: dict[str, float] = {}
        self.scrape_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stress-scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.scrape()

    def _problem(self, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 50:
            self.problems.append(f"scrape {self.scrapes}: {message}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scrape()
            except BaseException as exc:  # reported by check()
                self._problem(f"collect raised {exc!r}")
                return
            self._stop.wait(self.interval)

    def _key(self, name: str, **labels: str) -> _Key:
        return name, tuple(sorted({**self.base, **labels}.items()))

    def scrape(self) -> None:
        t0 = time.perf_counter()
        families = list(self.registry.collect())
        self.scrape_seconds += time.perf_counter() - t0
        values: dict[_Key, float] = {}
        for family in families:
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                value = s.value
                values[key] = value
                if math.isnan(value):
                    self._problem(f"NaN sample {key}")
                elif family.type == "counter" or (
                    family.type == "histogram" and s.name.endswith(_MONOTONIC_SUFFIXES)
                ):
                    prev = self.last.get(key)
                    if prev is not None and value < prev:
                        self._problem(f"counter went down: {key}: {prev!r} -> {value!r}")
                    self.last[key] = value
                elif family.type == "gauge" and value < 0:
                    self._problem(f"negative gauge {key}: {value!r}")
        k = self._key
        duration = "python_executor_tasks_duration_seconds_count"
        names = {
            "submitted": k("python_executor_submitted_tasks_total"),
            "queued": k("python_executor_queued_tasks"),
            "running": k("python_executor_running_tasks_total"),
            "completed": k(duration, result="completed"),
            "failed": k(duration, result="failed"),
            "cancelled": k("python_executor_cancelled_tasks_total"),
        }
        try:
            seen = {name: values[key] for name, key in names.items()}
        except KeyError as exc:
            self._problem(f"series missing: {exc}")
        else:
            skew = seen["submitted"] - sum(v for name, v in seen.items() if name != "submitted")
            if abs(skew) > abs(self.max_skew):
                self.max_skew = skew
                self.worst = seen
        self.scrapes += 1

    def check(self) -> None:
        """Fail the test on any problem seen; require that scrapes did happen."""
        assert self.problem_count == 0, (self.problem_count, self.problems)
        assert self.scrapes >= 3, self.scrapes


def run_threads(target: Callable[..., None], args_list: list[tuple[Any, ...]]) -> None:
    """Run ``target(*args)`` on one thread per ``args``; re-raise the first error."""
    errors: list[BaseException] = []

    def wrapped(*args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def package_bytes(snapshot: tracemalloc.Snapshot) -> tuple[int, tracemalloc.Snapshot]:
    """Bytes of the blocks allocated by a line of executor_exporter, and those traces."""
    own = snapshot.filter_traces([tracemalloc.Filter(True, os.path.join(PACKAGE_DIR, "*"))])
    return sum(trace.size for trace in own.traces), own


@pytest.fixture
def future_refs(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[Future[Any]]]:
    """Weak references to every Future created while the test runs (map's too)."""
    refs: list[weakref.ref[Future[Any]]] = []
    original = Future.__init__

    def init(self: Future[Any]) -> None:
        original(self)
        refs.append(weakref.ref(self))

    monkeypatch.setattr(Future, "__init__", init)
    return refs


def alive(refs: Sequence[weakref.ref[Any]]) -> list[Any]:
    """The referents still alive after a full collection."""
    gc.collect()
    return [f for f in (r() for r in refs) if f is not None]


# -- 1. thread pool under load -------------------------------------------------------------

# A submitter waits for its previous checkpoint task every BATCH submissions, which keeps
# the backlog at most 2 * BATCH per submitter.  BATCH is a multiple of 20, so that the
# checkpoint item (i % 20 == 19) never is one of the raising or cancelled items.
BATCH = 1_000


@pytest.mark.parametrize(
    "total",
    [
        pytest.param(40_000, id="40k"),
        # Not traced by coverage (pytest-cov's no_cover): the 40k run covers the
        # same lines, and tracing would make this one 2-3x slower.
        pytest.param(LOAD_TASKS, id="1M", marks=[pytest.mark.slow, pytest.mark.no_cover]),
    ],
)
def test_thread_pool_under_load(registry: CollectorRegistry, total: int) -> None:
    """8 threads submit ``total`` no-op and tiny tasks into 4 workers, 10% raising, 5%
    cancelled while queued, while a thread scrapes in a loop: counters never go down,
    gauges never go negative, and at quiescence every number is exact."""
    submitters = 8
    per = total // submitters
    assert per * submitters == total
    pool = ThreadPoolExecutor(4, executor_id="load", registry=registry)
    cancelled = [0] * submitters
    cancel_tried = [0] * submitters

    def submit_many(k: int) -> None:
        submit = pool.submit
        checkpoint: Future[Any] | None = None
        n_cancelled = n_tried = 0
        for i in range(per):
            r = i % 20
            if r < 2:  # 10%: raises
                submit(t.boom, i)
            elif r == 10:  # 5%: cancelled right after submission, while queued
                n_tried += 1
                if submit(t.tiny, i).cancel():
                    n_cancelled += 1
            elif i % BATCH == BATCH - 1:
                future = submit(t.noop)
                if checkpoint is not None:
                    checkpoint.result(timeout=120)
                checkpoint = future
            elif r % 2:
                submit(t.noop)
            else:
                submit(t.tiny, i)
        cancelled[k] = n_cancelled
        cancel_tried[k] = n_tried

    raised = submitters * sum(1 for i in range(per) if i % 20 < 2)
    t0 = time.perf_counter()
    with Scraper(registry, "load") as scraper:
        run_threads(submit_many, [(k,) for k in range(submitters)])
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    expected_cancelled = sum(cancelled)
    print(
        f"\nthread load: {total:,} tasks in {elapsed:.1f} s = {total / elapsed:,.0f} tasks/s;"
        f" {scraper.scrapes} scrapes ({scraper.scrape_seconds:.1f} s),"
        f" largest transient skew {scraper.max_skew:g} {scraper.worst};"
        f" cancel() succeeded {expected_cancelled:,}/{sum(cancel_tried):,}"
    )
    scraper.check()
    s = pool.stats()
    assert s.submitted == total
    assert s.failed == raised
    assert s.cancelled == expected_cancelled
    assert expected_cancelled > 0
    assert s.completed == total - raised - expected_cancelled
    assert s.submitted == s.completed + s.failed + s.cancelled
    assert (s.queued, s.running) == (0, 0)
    assert s.wait.count == s.completed + s.failed
    assert s.rejected_broken == s.rejected_shutdown == 0
    assert_invariants(s)
    e = assert_exported_invariants(registry, "load")
    assert (e.submitted, e.failed, e.cancelled) == (total, raised, expected_cancelled)
    assert (e.queued, e.running, e.workers_max) == (0, 0, 0)
    assert e.wait_count == s.completed + s.failed


# -- 2. process pool: load, raising items, a worker killed ------------------------------------

N_PLAIN = 10_000
N_MAP = 10_000
PLAIN_BEFORE_MAP = 2_000


def test_process_pool_load_with_killed_worker(registry: CollectorRegistry) -> None:
    """Plain submits and a chunked map on 2 worker processes, some items raising; a map
    item SIGKILLs its worker half-way through.  The pool breaks; after shutdown nothing
    is queued or running, every submitted task is completed, failed or cancelled,
    counters never went down during the run, and no child process is left."""
    pool = ProcessPoolExecutor(2, executor_id="proc-load", registry=registry)
    # Start the workers before any other thread exists (the pool forks on Linux 3.11).
    assert pool.submit(t.square, 3).result(timeout=60) == 9
    plain: list[Future[int]] = []
    rejected = 0
    map_go, map_submitted = threading.Event(), threading.Event()

    def submit_plain() -> None:
        nonlocal rejected
        for x in range(N_PLAIN):
            if x == PLAIN_BEFORE_MAP:
                # The map's chunks are queued after these, the rest of plain after them.
                map_go.set()
                assert map_submitted.wait(60)
            try:
                plain.append(pool.submit(t.plain_item, x))
            except BrokenProcessPool:
                rejected += 1

    t0 = time.perf_counter()
    with Scraper(registry, "proc-load", PROCESS_TYPE, interval=0.005) as scraper:
        submitter = threading.Thread(target=submit_plain)
        submitter.start()
        try:
            assert map_go.wait(60)
            results = pool.map(t.map_item, range(N_MAP), chunksize=50)
        finally:
            map_submitted.set()
            submitter.join()
        # Everything queued behind the killer chunk fails with the broken pool.
        assert isinstance(plain[-1].exception(timeout=120), BrokenProcessPool)
        with pytest.raises(ValueError, match="map item 37 "):
            list(results)  # the first chunk raised at its item 37
        del results
        with pytest.raises(BrokenProcessPool):
            pool.submit(t.square, 1)
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    scraper.check()

    outcomes = {"ok": 0, "raised": 0, "broken": 0}
    for f in plain:
        exc = f.exception(timeout=0)
        outcomes[
            "ok" if exc is None else "raised" if isinstance(exc, ValueError) else "broken"
        ] += 1
    early = plain[:PLAIN_BEFORE_MAP]
    early_raised = sum(1 for f in early if isinstance(f.exception(timeout=0), ValueError))
    del f, exc, early
    s = pool.stats()
    never_started = s.completed + s.failed - s.wait.count
    print(
        f"\nprocess load: {1 + len(plain) + N_MAP:,} tasks accepted, {rejected + 1:,} rejected"
        f" in {elapsed:.1f} s; plain outcomes {outcomes}; completed {s.completed:,},"
        f" failed {s.failed:,} ({never_started:,} never started); {scraper.scrapes} scrapes,"
        f" max transient skew {scraper.max_skew:g}"
    )
    assert early_raised == PLAIN_BEFORE_MAP // 10
    assert outcomes["broken"] == len(plain) - PLAIN_BEFORE_MAP
    assert s.submitted == 1 + len(plain) + N_MAP
    assert s.rejected_broken == rejected + 1
    assert (s.queued, s.running) == (0, 0)
    assert s.cancelled == 0
    assert s.submitted == s.completed + s.failed + s.cancelled, (
        f"{s.completed + s.failed + s.cancelled - s.submitted} tasks counted twice",
        s,
    )
    assert s.completed >= 1 + outcomes["ok"]
    assert s.failed >= outcomes["raised"] + outcomes["broken"]
    assert 0 < never_started <= s.failed
    assert (s.workers, s.workers_max) == (0, 0)
    assert_invariants(s, never_started=never_started)
    e = assert_exported_invariants(
        registry, "proc-load", PROCESS_TYPE, never_started=never_started
    )
    assert (e.submitted, e.queued, e.running) == (s.submitted, 0, 0)
    assert not multiprocessing.active_children()


# -- 3a. memory: flat once idle, over a million tasks -------------------------------------


def _feed(pool: ThreadPoolExecutor, n: int, cancelled: list[int]) -> None:
    """Submit ``n`` tasks (1% raising, 1% cancelled), 100 at a time, and wait for all."""
    submit = pool.submit
    batch: list[Future[Any]] = []
    prev: list[Future[Any]] = []
    for i in range(n):
        r = i % 100
        if r == 0:
            batch.append(submit(t.boom, i))
        elif r == 50:
            f = submit(t.tiny, i)
            if f.cancel():
                cancelled.append(1)
            else:
                batch.append(f)
        else:
            batch.append(submit(t.noop))
        if r == 99:
            for f in prev:
                f.exception(timeout=120)
            prev, batch = batch, []
    for f in prev + batch:
        f.exception(timeout=120)


FLUSH = 4_000


@pytest.mark.slow
@pytest.mark.no_cover  # as the 1M load run: nothing to cover that faster tests miss
def test_thread_pool_memory_flat_over_a_million_tasks(registry: CollectorRegistry) -> None:
    """With tracemalloc on after a warm-up, the memory held by blocks that lines of
    executor_exporter allocated is the same, once the pool is idle, after 100k and after
    1M tasks."""
    pool = ThreadPoolExecutor(2, executor_id="mem", registry=registry)
    cancelled: list[int] = []

    def feed(n: int) -> None:
        run_threads(_feed, [(pool, n // 2, cancelled)] * 2)

    def idle(expected: int) -> tuple[int, tracemalloc.Snapshot]:
        # The pending set is a dict, and a dict keeps the capacity of its peak (here up to
        # ~1,100 entries, tasks in flight plus cancelled ones awaiting a sweep: ~70 KiB)
        # until later insertions resize it.  Once a read has swept the cancelled tasks, a
        # few thousand tasks one at a time bring it back to its minimum, so that the
        # snapshots compare what is retained, not where each caught that bounded table.
        pool.stats()
        for _ in range(FLUSH):
            pool.submit(t.noop).result(timeout=10)
        s = pool.stats()
        assert (s.submitted, s.queued, s.running) == (expected, 0, 0)
        assert s.cancelled == len(cancelled)
        assert_invariants(s)
        del s
        gc.collect()
        return package_bytes(tracemalloc.take_snapshot())

    feed(10_000)  # warm-up: worker threads and slots, free lists
    t0 = time.perf_counter()
    # One frame per block: the line that allocated it (more frames cost 3x the time).
    tracemalloc.start(1)
    try:
        feed(90_000 - FLUSH)
        size_100k, snap_100k = idle(100_000)
        t1 = time.perf_counter()
        feed(900_000 - FLUSH)
        size_1m, snap_1m = idle(1_000_000)
        t2 = time.perf_counter()
    finally:
        tracemalloc.stop()
    pool.shutdown()
    growth = size_1m - size_100k
    top = "\n".join(map(str, snap_1m.compare_to(snap_100k, "lineno")[:8]))
    print(
        f"\nmemory: executor_exporter blocks {size_100k:,} B after 100k tasks,"
        f" {size_1m:,} B after 1M: growth {growth:+,} B; traced run"
        f" {900_000 / (t2 - t1):,.0f} tasks/s, whole test {t2 - t0:.0f} s\n{top}"
    )
    assert growth < 64 * 1024, top


# -- 3b. no future is retained ---------------------------------------------------------------


def test_thread_pool_retains_no_future(
    registry: CollectorRegistry, future_refs: list[weakref.ref[Future[Any]]]
) -> None:
    pool = ThreadPoolExecutor(2, registry=registry)
    fs = [pool.submit(t.tiny, i) for i in range(300)]
    fs += [pool.submit(t.boom, i) for i in range(50)]
    assert list(pool.map(t.square, range(200))) == [x * x for x in range(200)]
    with pytest.raises(ValueError, match="item 5 "):
        list(pool.map(t.raise_at, range(20), [5] * 20))
    cf.wait(fs)
    del fs
    assert len(future_refs) == 300 + 50 + 200 + 20
    # While the pool lives: the instrumentation holds none of them.
    assert not alive(future_refs)
    assert not pool._ee_state.pending
    s = pool.stats()
    # map cancels the items after the one that raised, those still queued.
    assert (s.submitted, s.failed, s.completed + s.cancelled) == (570, 51, 300 + 200 + 19)
    assert_invariants(s)
    pool.shutdown()


def test_process_pool_retains_no_future(
    registry: CollectorRegistry, future_refs: list[weakref.ref[Future[Any]]], tmp_path: Path
) -> None:
    with ProcessPoolExecutor(2, registry=registry) as pool:
        fs = [pool.submit(t.square, i) for i in range(100)]
        fs += [pool.submit(t.boom, i) for i in range(20)]
        assert list(pool.map(t.square, range(300), chunksize=7)) == [x * x for x in range(300)]
        assert list(pool.map(t.square, range(30))) == [x * x for x in range(30)]
        with pytest.raises(ValueError, match="item 23 "):
            list(pool.map(t.raise_at, range(60), [23] * 60, chunksize=5))
        cf.wait(fs)
        del fs
        # Cancelled while queued: one worker held, the rest queued behind it.
        gate = str(tmp_path / "go")
        held = [pool.submit(t.wait_for_file, gate) for _ in range(2)]
        queued = [pool.submit(t.square, i) for i in range(40)]
        n_cancelled = sum(f.cancel() for f in queued)
        Path(gate).touch()
        cf.wait(held + queued)
        del held, queued
        assert n_cancelled > 0
        # While the pool lives: the instrumentation holds none of them.
        assert not alive(future_refs)
        assert not pool._ee_state.pending
        s = pool.stats()
        assert s.submitted == 100 + 20 + 300 + 30 + 60 + 2 + 40
        # map also cancelled its chunks still queued after the one that raised.
        assert s.cancelled >= n_cancelled
        assert (s.queued, s.running) == (0, 0)
        assert_invariants(s, never_started=s.completed + s.failed - s.wait.count)


@pytest.mark.parametrize("settle", ["stats", "scrape"])
@pytest.mark.parametrize("how", ["cancel", "shutdown_cancel_futures"])
def test_cancelled_futures_released_after_one_read(
    registry: CollectorRegistry, gate: Gate, how: str, settle: str
) -> None:
    """A cancelled task waits in the pending set until a read sweeps it: one stats() call
    or one scrape releases its future."""
    pool = ThreadPoolExecutor(1, executor_id="cancel", registry=registry)
    blocker = pool.submit(gate.block)
    gate.wait_started(1)
    fs = [pool.submit(t.tiny, i) for i in range(100)]
    refs = [weakref.ref(f) for f in fs]
    if how == "cancel":
        assert all(f.cancel() for f in fs)
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in fs)
    del fs
    gate.open()
    assert blocker.result(timeout=10) is None
    if how == "cancel":
        # The queue is FIFO: once this ran, the worker has dropped every cancelled item.
        assert pool.submit(t.noop).result(timeout=10) is None
    else:
        pool.shutdown(wait=True)
    del blocker
    if settle == "stats":
        s = pool.stats()
        assert (s.cancelled, s.queued, s.running) == (100, 0, 0)
    else:
        collector_for(registry).collect()
    assert not alive(refs)
    assert not pool._ee_state.pending
    pool.shutdown()
    assert sample(registry, "python_executor_cancelled_tasks_total", "cancel") == 100


# -- 3c. a thousand executors come and go -----------------------------------------------------


@pytest.mark.slow
def test_thousand_short_lived_executors_stay_bounded(registry: CollectorRegistry) -> None:
    """1,000 pools with distinct ids, each used once, shut down and dropped: after one
    scrape the collector holds no per-instance state, only each id's counters, which are
    still exported; scraping 1,000 ids takes reasonable time."""
    n = 1_000
    collector = collector_for(registry)
    pools: list[weakref.ref[ThreadPoolExecutor]] = []
    states: list[weakref.ref[Any]] = []
    t0 = time.perf_counter()
    for i in range(n):
        pool = ThreadPoolExecutor(1, executor_id=f"short-{i:04d}", registry=registry)
        assert pool.submit(t.tiny, i).result(timeout=10) == i + 1
        pool.shutdown()
        pools.append(weakref.ref(pool))
        states.append(weakref.ref(pool._ee_state))
    del pool
    churn = time.perf_counter() - t0
    gc.collect()
    assert not [r for r in pools if r() is not None]
    assert len(collector._groups) == n
    t1 = time.perf_counter()
    families = collector.collect()  # folds every dropped instance into its id's counters
    first = time.perf_counter() - t1
    assert sum(len(group.states) for group in collector._groups.values()) == 0
    gc.collect()
    assert not [r for r in states if r() is not None]
    t2 = time.perf_counter()
    families = collector.collect()
    second = time.perf_counter() - t2
    t3 = time.perf_counter()
    text = generate_latest(registry)
    exposition = time.perf_counter() - t3
    samples = sum(len(f.samples) for f in families)
    print(
        f"\n{n:,} executors: created, used and shut down in {churn:.2f} s; collect() of"
        f" {n:,} ids ({samples:,} samples): {first * 1000:.0f} ms folding,"
        f" {second * 1000:.0f} ms after; generate_latest {exposition * 1000:.0f} ms"
        f" ({len(text):,} bytes)"
    )
    assert first < 5.0
    assert second < 5.0
    # Each id's counters stay exported, exact.
    values = {
        (s.name, s.labels["executor"], s.labels.get("result")): s.value
        for f in families
        for s in f.samples
    }
    for i in range(n):
        executor = f"short-{i:04d}"

        def v(name: str, result: str | None = None, executor: str = executor) -> float:
            return values[name, executor, result]

        assert v("python_executor_submitted_tasks_total") == 1
        assert v("python_executor_task_wait_seconds_count") == 1
        assert v("python_executor_tasks_duration_seconds_count", "completed") == 1
        assert v("python_executor_tasks_duration_seconds_count", "failed") == 0
        assert v("python_executor_cancelled_tasks_total") == 0
        assert v("python_executor_max_workers_total") == 1
        assert v("python_executor_queued_tasks") == 0
        assert v("python_executor_running_tasks_total") == 0
        assert v("python_executor_workers") == 0
        assert v("python_executor_workers_max") == 0


def test_dropped_process_pools_are_retired(registry: CollectorRegistry) -> None:
    """The same for process pools: their state (and shared memory) is released."""
    collector = collector_for(registry)
    states: list[weakref.ref[Any]] = []
    for i in range(8):
        with ProcessPoolExecutor(1, executor_id=f"proc-{i}", registry=registry) as pool:
            assert list(pool.map(t.square, range(10), chunksize=3)) == [x * x for x in range(10)]
        states.append(weakref.ref(pool._ee_state))
    del pool
    gc.collect()
    collector.collect()
    assert sum(len(group.states) for group in collector._groups.values()) == 0
    gc.collect()
    assert not [r for r in states if r() is not None]
    for i in range(8):
        assert (
            sample(registry, "python_executor_submitted_tasks_total", f"proc-{i}", PROCESS_TYPE)
            == 10
        )
        e = assert_exported_invariants(registry, f"proc-{i}", PROCESS_TYPE)
        assert (e.completed, e.queued, e.running) == (10, 0, 0)
    assert not multiprocessing.active_children()


# -- 3. proxies over out-of-process executors ------------------------------------------------


@pytest.mark.parametrize("engine", ["stdlib-process", "loky"])
def test_remote_proxy_under_load(registry: CollectorRegistry, engine: str) -> None:
    """4 threads submit 4,000 calls through a proxy over 2 worker processes, 10% raising,
    5% cancelled while queued, while a thread scrapes in a loop: counters never go down,
    gauges never go negative, and once every future is done every number is exact."""
    if engine == "loky":
        loky = (
            pytest.importorskip("loky") if os.environ.get("CI") != "true" else __import__("loky")
        )
        executor: cf.Executor = loky.get_reusable_executor(max_workers=2, reuse=False)
    else:
        executor = cf.ProcessPoolExecutor(2)
    exporter = ExecutorExporter(executor, executor_id="remote-load", registry=registry)
    proxy = InstrumentedExecutorProxy(executor, exporter, 2)
    submitters, per = 4, 1_000
    futures: list[list[Future[Any]]] = [[] for _ in range(submitters)]
    cancelled = [0] * submitters

    def submit_many(k: int) -> None:
        for i in range(per):
            r = i % 20
            if r < 2:
                futures[k].append(proxy.submit(t.boom, i))
            elif r == 10:
                f = proxy.submit(t.tiny, i)
                if f.cancel():
                    cancelled[k] += 1
                futures[k].append(f)
            else:
                futures[k].append(proxy.submit(t.tiny, i))

    with Scraper(registry, "remote-load", exporter.executor_type) as scraper:
        run_threads(submit_many, [(k,) for k in range(submitters)])
        _, not_done = cf.wait([f for fs in futures for f in fs], timeout=120)
        assert not not_done
    executor.shutdown(wait=True)
    scraper.check()
    total = submitters * per
    raised = submitters * sum(1 for i in range(per) if i % 20 < 2)
    s = proxy.stats()
    assert (s.submitted, s.failed, s.cancelled) == (total, raised, sum(cancelled))
    assert s.completed == total - raised - sum(cancelled)
    assert (s.queued, s.running) == (0, 0)
    assert s.wait.count == s.completed + s.failed
    assert_invariants(s)
    assert_exported_invariants(registry, "remote-load", exporter.executor_type)

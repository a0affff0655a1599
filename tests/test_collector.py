"""The scrape-time collector: families, histograms, retired executors, concurrency."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing as mp
import sys
import threading
import time
import weakref
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

import proc_tasks
from executor_exporter import (
    METRICS,
    ExecutorExporter,
    InstrumentedExecutorProxy,
    _child,
    _stdlib,
    _task,
    _work_item,
)
from executor_exporter import ProcessPoolExecutor as ProcessPool
from executor_exporter import ThreadPoolExecutor as Pool
from executor_exporter import collector as collector_module
from executor_exporter import process as process_module
from executor_exporter._state import ExecutorState
from executor_exporter.collector import collector_for
from executor_exporter.exporter import type_name
from helpers import (
    THREAD_TYPE,
    Gate,
    all_samples,
    assert_exported_invariants,
    assert_invariants,
    exported,
    has_series,
    sample,
)

FORK = mp.get_context("fork")


def _fail(x: int) -> int:
    raise ValueError(x)


def _exposed_name(family: Any) -> str:
    return family.name + "_total" if family.type == "counter" else family.name


def _series_key(s: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    return s.name, tuple(sorted(s.labels.items()))


def _counter_samples(registry: CollectorRegistry) -> dict[Any, float]:
    return {
        _series_key(s): s.value
        for family in registry.collect()
        if family.type in ("counter", "histogram")
        for s in family.samples
    }


# -- families --------------------------------------------------------------------------


def test_describe_does_not_read_executors(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """describe() names all 14 families without reading any executor state."""
    pool = Pool(2, executor_id="d", registry=registry)
    pool.submit(int).result()

    def refuse(self: ExecutorState, now: float) -> Any:
        raise AssertionError("describe() read an executor")

    monkeypatch.setattr(ExecutorState, "read", refuse)
    with pytest.raises(AssertionError, match="read an executor"):
        list(registry.collect())  # the patch is effective: a real scrape reads
    families = list(collector_for(registry).describe())
    assert sorted(_exposed_name(f) for f in families) == sorted(m.name for m in METRICS)
    assert {_exposed_name(f): f.type for f in families} == {m.name: m.type for m in METRICS}
    assert all(f.samples == [] for f in families)
    # Registering in a fresh registry describes too, and so reads nothing.
    other = CollectorRegistry()
    Pool(1, executor_id="d2", registry=other).shutdown()
    pool.shutdown()


def test_every_family_with_its_labels(registry: CollectorRegistry) -> None:
    """One executor exposes the 14 families with exactly the labels of METRICS."""
    with Pool(2, executor_id="fam", registry=registry) as pool:
        pool.submit(int).result()
        families = {_exposed_name(f): f for f in registry.collect()}
    assert set(families) == {m.name for m in METRICS}
    for m in METRICS:
        family = families[m.name]
        assert family.type == m.type, m.name
        assert family.samples, m.name
        for s in family.samples:
            assert set(s.labels) - {"le"} == set(m.labels), (m.name, s.labels)
            assert s.labels["executor"] == "fam"
            assert s.labels["executor_type"] == THREAD_TYPE
    results = {
        s.labels["result"] for s in families["python_executor_tasks_duration_seconds"].samples
    }
    reasons = {
        s.labels["reason"] for s in families["python_executor_rejected_tasks_total"].samples
    }
    assert (results, reasons) == ({"completed", "failed"}, {"shutdown", "broken"})


def test_text_and_openmetrics_exposition_parse(registry: CollectorRegistry) -> None:
    """Both exposition formats are produced and parse back into 14 families."""
    with Pool(2, executor_id="fmt", registry=registry) as pool:
        pool.submit(int).result()
        pool.submit(_fail, 1).exception()
    text = generate_latest(registry).decode()
    assert len(list(text_string_to_metric_families(text))) == 14
    om = generate_openmetrics(registry).decode()
    assert len(list(parse_openmetrics(om))) == 14
    assert 'python_executor_submitted_tasks_total{executor="fmt"' in text


def test_registries_are_isolated(registry: CollectorRegistry) -> None:
    """An executor exported to one registry is invisible in another."""
    other = CollectorRegistry()
    with (
        Pool(1, executor_id="iso", registry=registry) as a,
        Pool(1, executor_id="iso", registry=other) as b,
    ):
        a.submit(int).result()
        for _ in range(3):
            b.submit(int).result()
    assert exported(registry, "iso").submitted == 1
    assert exported(other, "iso").submitted == 3
    assert exported(registry, "iso").max_workers_total == 1


def test_exported_matches_stats(registry: CollectorRegistry) -> None:
    """For an id with one instance, the exported numbers equal stats()."""
    pool = Pool(3, executor_id="m", registry=registry)
    futures = [pool.submit(_fail if i % 3 == 0 else abs, i) for i in range(12)]
    cf.wait(futures)
    pool.shutdown()
    s = pool.stats()
    e = assert_exported_invariants(registry, "m")
    assert (e.submitted, e.completed, e.failed) == (s.submitted, s.completed, s.failed)
    assert (s.submitted, s.completed, s.failed) == (12, 8, 4)
    assert (e.wait_count, e.initialized, e.max_workers_total) == (
        s.wait.count,
        s.initialized_workers,
        s.max_workers_total,
    )
    assert e.busy == pytest.approx(s.busy_seconds)
    assert sample(registry, "python_executor_task_wait_seconds_sum", "m") == pytest.approx(
        s.wait.sum
    )
    assert sample(
        registry, "python_executor_tasks_duration_seconds_sum", "m", result="completed"
    ) == pytest.approx(s.completed_duration.sum)


# -- histograms ------------------------------------------------------------------------


def _histograms(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], Any]:
    """{(family, labels without le): {"buckets": [(le, v)], "count": v, "sum": v}}."""
    out: dict[tuple[str, tuple[Any, ...]], Any] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            h = out.setdefault((family.name, labels), {"buckets": []})
            if s.name.endswith("_bucket"):
                h["buckets"].append((s.labels["le"], s.value))
            elif s.name.endswith("_count"):
                h["count"] = s.value
            elif s.name.endswith("_sum"):
                h["sum"] = s.value
    return out


def test_histogram_buckets_cumulative(registry: CollectorRegistry) -> None:
    """Buckets are cumulative in le order, +Inf equals _count, and the counts are exact."""
    with Pool(3, executor_id="hist", duration_buckets=[0.05, 10], registry=registry) as pool:
        cf.wait([pool.submit(time.sleep, 0.06) for _ in range(4)])
        cf.wait([pool.submit(_fail, i) for i in range(2)])
    hists = _histograms(registry)
    assert len(hists) == 3  # wait, duration completed, duration failed
    for key, h in hists.items():
        bounds = [float(le) for le, _ in h["buckets"]]
        values = [v for _, v in h["buckets"]]
        assert bounds == sorted(bounds), key
        assert bounds[-1] == float("inf"), key
        assert values == sorted(values), (key, values)
        assert values[-1] == h["count"], key
        assert h["sum"] >= 0
    base = (("executor", "hist"), ("executor_type", THREAD_TYPE))
    completed = hists[("python_executor_tasks_duration_seconds", (*base, ("result", "completed")))]
    failed = hists[("python_executor_tasks_duration_seconds", (*base, ("result", "failed")))]
    wait = hists[("python_executor_task_wait_seconds", base)]
    assert completed["buckets"][0] == ("0.05", 0)  # each slept at least 0.06 s
    assert (completed["count"], failed["count"], wait["count"]) == (4, 2, 6)
    assert completed["sum"] >= 4 * 0.06


def test_custom_buckets_are_le_values(registry: CollectorRegistry) -> None:
    """Custom bounds show up as the le values (plus +Inf), in stats too."""
    pool = Pool(
        1,
        executor_id="cb",
        wait_buckets=(0.25, 1, 7.5),
        duration_buckets=[0.05, 10],
        registry=registry,
    )
    pool.submit(int).result()
    pool.shutdown()
    hists = _histograms(registry)
    les = {
        name + dict(labels).get("result", ""): [le for le, _ in h["buckets"]]
        for (name, labels), h in hists.items()
    }
    assert les == {
        "python_executor_task_wait_seconds": ["0.25", "1.0", "7.5", "+Inf"],
        "python_executor_tasks_duration_secondscompleted": ["0.05", "10.0", "+Inf"],
        "python_executor_tasks_duration_secondsfailed": ["0.05", "10.0", "+Inf"],
    }
    stats = pool.stats()
    assert stats.wait.bounds == (0.25, 1.0, 7.5)
    assert stats.completed_duration.bounds == (0.05, 10.0)
    assert len(stats.wait.buckets) == 4


# -- executors that are gone -----------------------------------------------------------


def _busy_pool(registry: CollectorRegistry, executor_id: str, gate: Gate) -> Pool:
    """A shut-down pool with completed, failed, cancelled and rejected tasks."""
    pool = Pool(1, executor_id=executor_id, registry=registry)
    pool.submit(gate.block)
    gate.wait_started(1)
    failing = pool.submit(_fail, 1)
    pool.submit(int).cancel()
    gate.open()
    failing.exception(timeout=5)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(int)
    return pool


def test_gc_keeps_counters(registry: CollectorRegistry, gate: Gate) -> None:
    """An executor garbage-collected keeps its counters exported, none going down;
    its gauges read 0."""
    pool = _busy_pool(registry, "gc", gate)
    ref = weakref.ref(pool)
    before = _counter_samples(registry)
    e = exported(registry, "gc")
    assert (e.submitted, e.completed, e.failed, e.cancelled, e.rejected_shutdown) == (
        3,
        1,
        1,
        1,
        1,
    )
    del pool
    gc.collect()
    assert ref() is None
    for _ in range(2):
        after = _counter_samples(registry)
        assert after == before
    e = assert_exported_invariants(registry, "gc")
    assert (e.submitted, e.completed, e.failed, e.cancelled, e.rejected_shutdown) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert (e.workers, e.workers_max, e.queued, e.running) == (0, 0, 0, 0)
    assert e.max_workers_total == 1


def test_gc_while_task_runs(registry: CollectorRegistry, gate: Gate) -> None:
    """A pool collected while a task still runs: the task stays running, then counts."""
    pool = Pool(1, executor_id="gcr", registry=registry)
    fut = pool.submit(gate.block, 5)
    gate.wait_started(1)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    e = exported(registry, "gcr")
    assert (e.submitted, e.running, e.completed) == (1, 1, 0)
    gate.open()
    assert fut.result(timeout=5) == 5
    for _ in range(2):
        e = assert_exported_invariants(registry, "gcr")
        assert (e.submitted, e.running, e.completed, e.workers_max) == (1, 0, 1, 0)


def test_gc_proxy_executor_keeps_counters(registry: CollectorRegistry) -> None:
    """The wrapped executor of a proxy going away keeps its counters exported."""
    inner = cf.ThreadPoolExecutor(1)
    proxy = InstrumentedExecutorProxy(inner, ExecutorExporter(inner, "gp", registry=registry), 1)
    proxy.submit(int).result()
    proxy.shutdown()
    del proxy, inner
    gc.collect()
    e = assert_exported_invariants(registry, "gp")
    assert (e.submitted, e.completed, e.max_workers_total, e.workers_max) == (1, 1, 1, 0)
    assert e.workers is None


def test_many_pools_come_and_go(registry: CollectorRegistry) -> None:
    """Pools created and dropped one after the other add up under their shared id."""
    for i in range(100):
        pool = Pool(2, executor_id="churn", registry=registry)
        pool.submit(int).result()
        if i % 2:
            pool.shutdown()
        del pool
        if i % 10 == 0:
            list(registry.collect())
    gc.collect()
    e = assert_exported_invariants(registry, "churn")
    assert (e.submitted, e.completed, e.max_workers_total) == (100, 100, 200)
    wait_for_zero = time.monotonic() + 5
    while exported(registry, "churn").workers and time.monotonic() < wait_for_zero:
        time.sleep(0.01)  # unshut pools' threads exit on their own
    e = exported(registry, "churn")
    assert (e.workers, e.workers_max) == (0, 0)


def test_dropped_pools_are_folded_without_a_scrape(registry: CollectorRegistry) -> None:
    """A process never scraped does not keep every dropped pool: adding instances folds
    the dropped, quiescent ones (amortized), and their counters are kept."""
    collector = collector_for(registry)
    states: list[weakref.ref[ExecutorState]] = []
    for i in range(300):
        pool = Pool(1, executor_id=f"never-scraped-{i % 3}", registry=registry)
        pool.submit(int).result()
        pool.shutdown()
        states.append(weakref.ref(pool._ee_state))
        del pool
        if i % 50 == 0:
            gc.collect()  # whatever cycles a pool is in: it is gone now
    held = sum(len(group.states) for group in collector._groups.values())
    assert held < 2 * collector_module._FOLD_MIN, held
    gc.collect()
    assert sum(ref() is not None for ref in states) == held
    for n in range(3):
        e = assert_exported_invariants(registry, f"never-scraped-{n}")
        assert (e.submitted, e.completed, e.max_workers_total) == (100, 100, 100)


def test_dropped_process_pools_release_their_shared_memory(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold without a scrape lets a dropped process pool's shared block and lock go."""
    monkeypatch.setattr(collector_module, "_FOLD_MIN", 4)
    collector = collector_for(registry)
    collector._fold_at = 4
    states: list[weakref.ref[ExecutorState]] = []
    for _ in range(12):
        pool = ProcessPool(1, executor_id="never-scraped", registry=registry)
        assert pool.submit(abs, -3).result(timeout=30) == 3
        pool.shutdown()
        states.append(weakref.ref(pool._ee_state))
        del pool
        gc.collect()
    gc.collect()
    alive = sum(ref() is not None for ref in states)
    assert alive < 8, alive
    e = assert_exported_invariants(registry, "never-scraped", type_name(cf.ProcessPoolExecutor))
    assert (e.submitted, e.completed, e.max_workers_total) == (12, 12, 12)


# -- concurrency -----------------------------------------------------------------------


def test_scrape_while_a_new_id_registers(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape racing with the constructor of an executor under a new id succeeds.

    The constructor is run at the point where a scrape has taken its view of the groups
    and is about to read them: what another thread may do at any moment.
    """
    first = Pool(1, executor_id="first", registry=registry)
    collector = collector_for(registry)
    real_read = collector.read
    late: list[Pool] = []

    def read_racing() -> Any:
        if not late:
            late.append(Pool(1, executor_id="late", registry=registry))
        return real_read()

    monkeypatch.setattr(collector, "read", read_racing)
    registry.collect()
    assert has_series(registry, "late")
    first.shutdown()
    for p in late:
        p.shutdown()


def _scraper(
    registry: CollectorRegistry, stop: threading.Event, problems: list[str], scrapes: list[int]
) -> None:
    """Scrape until stopped; report counters going down, negative gauges, errors."""
    previous: dict[Any, float] = {}
    while not stop.is_set():
        try:
            families = list(registry.collect())
        except Exception as exc:  # reported, not raised: this runs in a thread
            problems.append(f"scrape failed: {exc!r}")
            continue
        for family in families:
            for s in family.samples:
                key = _series_key(s)
                if family.type in ("counter", "histogram"):
                    if s.value < previous.get(key, 0.0):
                        problems.append(f"{key} went from {previous[key]} to {s.value}")
                    previous[key] = s.value
                elif s.value < 0:
                    problems.append(f"{key} negative: {s.value}")
        scrapes.append(1)
        # Let the pool run between scrapes: a scraper in a tight loop holds the GIL
        # most of the time and stretches the test tenfold without finding more.
        time.sleep(0.001)


def test_counters_monotonic_under_load(registry: CollectorRegistry) -> None:
    """20k tasks (some failing) from 4 submitting threads while a thread scrapes in a
    loop: no counter sample ever goes down, no gauge is negative, and the numbers are
    exact once the pool is idle."""
    pool = Pool(8, executor_id="load", registry=registry)
    stop, problems, scrapes = threading.Event(), [], []
    scraper = threading.Thread(target=_scraper, args=(registry, stop, problems, scrapes))
    scraper.start()
    per_thread, failing = 5000, 0
    futures: list[list[cf.Future[Any]]] = [[] for _ in range(4)]

    def submitter(n: int) -> None:
        if n < 2:
            futures[n] = [pool.submit(_fail if i % 10 == 0 else abs, i) for i in range(per_thread)]
        else:
            assert list(pool.map(abs, range(per_thread))) == list(range(per_thread))

    try:
        threads = [threading.Thread(target=submitter, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cf.wait([f for fs in futures for f in fs])
        failing = sum(1 for fs in futures for f in fs if f.exception() is not None)
        deadline = time.monotonic() + 5
        while len(scrapes) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        scraper.join()
    assert not problems, problems[:10]
    assert len(scrapes) >= 3
    assert failing == 2 * per_thread // 10
    stats = pool.stats()
    assert stats.submitted == 4 * per_thread
    assert (stats.failed, stats.completed) == (failing, 4 * per_thread - failing)
    assert (stats.queued, stats.running, stats.cancelled) == (0, 0, 0)
    assert stats.wait.count == 4 * per_thread
    assert_invariants(stats)
    e = assert_exported_invariants(registry, "load")
    assert (e.submitted, e.failed) == (4 * per_thread, failing)
    pool.shutdown()


@pytest.mark.slow
def test_scrapes_during_executor_churn(registry: CollectorRegistry) -> None:
    """Threads create pools under shared and new ids, submit, cancel, shut down and drop
    them, while a thread scrapes: scrapes never fail, counters never go down, and the
    totals are exact at the end."""
    stop, problems, scrapes = threading.Event(), [], []
    scraper = threading.Thread(target=_scraper, args=(registry, stop, problems, scrapes))
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    rounds, workers = 150, 6
    scraper.start()

    def churn(n: int) -> None:
        for i in range(rounds):
            executor_id = "shared" if i % 2 else f"t{n}-{i}"
            pool = Pool(2, executor_id=executor_id, registry=registry)
            gate = threading.Event()
            blockers = [pool.submit(gate.wait, 5) for _ in range(2)]
            extra = [pool.submit(abs, -i) for _ in range(3)]
            extra[0].cancel()
            gate.set()
            cf.wait(blockers + extra)
            pool.shutdown(wait=bool(i % 3))
            del pool

    try:
        threads = [threading.Thread(target=churn, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        scraper.join()
        sys.setswitchinterval(old_interval)
    gc.collect()
    assert not problems, problems[:10]
    assert len(scrapes) >= 3
    total_submitted = sum(
        s.value for s in all_samples(registry) if s.name == "python_executor_submitted_tasks_total"
    )
    total_cancelled = sum(
        s.value for s in all_samples(registry) if s.name == "python_executor_cancelled_tasks_total"
    )
    assert total_submitted == rounds * workers * 5
    # Each round cancels one task queued behind two blocked ones.
    assert total_cancelled == rounds * workers
    e = assert_exported_invariants(registry, "shared")
    assert e.max_workers_total == 2 * workers * (rounds // 2)


# -- which bucket each value lands in --------------------------------------------------


def _buckets_run(path: str, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry) -> Any:
    """Run a first task, then tasks of 0, 0.3, 0 and 0.3 s one after the other on a
    one-worker pool of ``path``, and return the pool's stats.

    Time is ``proc_tasks.fake_clock``, which only the tasks move: on a busy machine a
    real task of 0 s can take longer than the first bound (a CI run saw it).  Process
    pools fork, so that their workers read the same clock.
    """
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, "1" if path == "thread, wrapped" else "0")
    monkeypatch.setattr(proc_tasks, "fake_now", 0.0)
    for module in (_work_item, _task, _child, process_module):
        monkeypatch.setattr(module, "monotonic", proc_tasks.fake_clock)
    buckets = {"wait_buckets": (0.25, 100), "duration_buckets": (0.25, 100)}
    durations = [0.0, 0.3, 0.0, 0.3]
    if path.startswith("thread"):
        with Pool(1, registry=registry, **buckets) as pool:
            # The worker holds at the gate until every task is submitted: submitting
            # reads the clock the worker moves.
            gate = threading.Event()
            first = pool.submit(gate.wait, 30)
            futures = [pool.submit(proc_tasks.advance_clock, d) for d in durations]
            gate.set()
            assert first.result() is True
            cf.wait(futures)
            return pool.stats()
    # The parent's clock stands still: only the worker's copy moves.
    with ProcessPool(1, registry=registry, mp_context=FORK, **buckets) as ppool:
        ppool.submit(proc_tasks.advance_clock, 0.0).result()
        if path == "process, map":
            list(ppool.map(proc_tasks.advance_clock, durations, chunksize=4))
        else:
            cf.wait([ppool.submit(proc_tasks.advance_clock, d) for d in durations])
        return ppool.stats()


@pytest.mark.parametrize(
    "path", ["thread, own items", "thread, wrapped", "process, submit", "process, map"]
)
def test_values_land_in_their_buckets(
    path: str, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    """Every recording path puts values in the first bucket and past it where they
    belong (the hot paths skip the bisect for the first bucket: see _layout)."""
    stats = _buckets_run(path, monkeypatch, registry)
    # Cumulative, le 0.25, 100, +Inf.  Durations: three tasks of 0 s, two of 0.3 s.
    # Waits: the first task and the next two start at once, the last two after a
    # task of 0.3 s each.
    assert stats.completed_duration.buckets == (3, 5, 5)
    assert stats.wait.buckets == (3, 5, 5)
    assert stats.completed_duration.sum == pytest.approx(0.6)
    assert stats.wait.sum == pytest.approx(0.6)

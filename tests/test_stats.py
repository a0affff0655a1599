"""``ExecutorStats`` and ``HistogramStats`` as people read them (``print(pool.stats())``)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from executor_exporter import ExecutorStats, HistogramStats, ThreadPoolExecutor


def _idle_stats() -> ExecutorStats:
    pool = ThreadPoolExecutor(2, executor_id="db", registry=CollectorRegistry())
    try:
        return pool.stats()
    finally:
        pool.shutdown()


def test_str_is_several_lines_with_every_count() -> None:
    stats = dataclasses.replace(
        _idle_stats(),
        submitted=12,
        queued=3,
        running=2,
        completed=5,
        failed=1,
        cancelled=1,
        rejected_shutdown=4,
        rejected_broken=0,
        workers=2,
        workers_max=2,
        busy_seconds=2.5,
        oldest_queued_age=0.0125,
        oldest_running_age=0.0004,
        wait=HistogramStats((0.1,), (6, 8), 0.8),
        failed_duration=HistogramStats((0.1,), (1, 1), 0.002),
    )
    lines = str(stats).splitlines()
    assert lines == [
        "executor 'db' (concurrent.futures.thread.ThreadPoolExecutor)",
        "  tasks:    12 submitted, 3 queued, 2 running, 5 completed, 1 failed, 1 cancelled",
        "  rejected: 4 after shutdown, 0 by a broken pool",
        "  workers:  2 alive of 2 allowed, 0 initialized",
        "  busy:     2.50 s; oldest queued 12.5 ms, oldest running 400 us",
        "  wait:     count 8, mean 100.0 ms",
        "  duration: completed count 0; failed count 1, mean 2.0 ms",
    ]
    # repr() stays the dataclass's: every field, for logs that must be complete.
    assert repr(stats).startswith("ExecutorStats(executor_id='db', ")


def test_str_of_a_proxy_of_unknown_size() -> None:
    stats = dataclasses.replace(_idle_stats(), workers=None, workers_max=None)
    assert "  workers:  ? alive of ? allowed, 0 initialized" in str(stats).splitlines()


def test_histogram_buckets_are_cumulative_with_one_more_than_bounds() -> None:
    pool = ThreadPoolExecutor(
        1, registry=CollectorRegistry(), wait_buckets=(1.0, 10.0), duration_buckets=(1.0,)
    )
    try:
        pool.submit(int).result()
    finally:
        pool.shutdown()
    wait = pool.stats().wait
    assert wait.bounds == (1.0, 10.0)
    assert len(wait.buckets) == len(wait.bounds) + 1
    assert wait.buckets == (1, 1, 1)  # a wait under 1 s is also under 10 s and +Inf
    assert wait.count == 1

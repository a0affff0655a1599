"""The custom collector: sums executor states by (id, type) at scrape time.

One collector is registered per registry, the first time an executor is exported to
it; it exposes every metric family of :mod:`executor_exporter.metrics`.  Instances
sharing an id and type form a *group*; an instance whose executor is gone is folded into
the group's retired counters once it is quiescent, so counters never go back and the
memory held stays bounded however many executors come and go.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import metrics as m
from ._layout import Layout
from ._state import ExecutorState, Totals

__all__ = ["ExecutorCollector", "collector_for"]


class _Group:
    """The instances exported under one (executor, executor_type) label pair."""

    __slots__ = ("layout", "states", "retired", "busy_floor")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.states: list[ExecutorState] = []
        self.retired = Totals(layout)
        # busy_seconds mixes finished durations with the elapsed part of running tasks;
        # read while a task ends it may dip by a hair.  A counter must never go back.
        self.busy_floor = 0.0

    def read(self, now: float) -> Totals:
        total = Totals(self.layout)
        total.add(self.retired)
        kept = []
        for state in self.states:
            t = state.read(now)
            if state.closed and not state.pending and t.running == 0:
                self.retired.add(t.retire())
                total.add(t.retire())
                continue
            kept.append(state)
            total.add(t)
        self.states = kept
        self.busy_floor = total.busy = max(self.busy_floor, total.busy)
        return total


class ExecutorCollector(Collector):
    """Exposes every executor exported to one registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], _Group] = {}

    def add(self, state: ExecutorState) -> None:
        """Start exporting ``state``; raise ValueError if its buckets clash with its id's."""
        key = (state.executor_id, state.executor_type)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(state.layout)
            elif group.layout != state.layout:
                raise ValueError(
                    f"executor_id {state.executor_id!r} ({state.executor_type}) is already "
                    "exported with other histogram buckets; instances sharing an id must "
                    "share buckets"
                )
            group.states.append(state)

    def read(self) -> dict[tuple[str, str], Totals]:
        """Return the totals of every group, read now."""
        now = time.monotonic()
        with self._lock:
            return {key: group.read(now) for key, group in self._groups.items()}

    def describe(self) -> Iterable[Metric]:
        """Name the families without reading any executor (used at registration)."""
        return list(_families({}, {}))

    def collect(self) -> Iterable[Metric]:
        """Build every family from the current totals."""
        with self._lock:
            layouts = {key: group.layout for key, group in self._groups.items()}
        return list(_families(self.read(), layouts))


def _families(
    totals: dict[tuple[str, str], Totals], layouts: dict[tuple[str, str], Layout]
) -> Iterator[Metric]:
    labels = list(m.BASE_LABELS)

    def counter(d: m.MetricDefinition, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(d.name, d.help, labels=labels + list(extra))

    def gauge(d: m.MetricDefinition) -> GaugeMetricFamily:
        return GaugeMetricFamily(d.name, d.help, labels=labels)

    max_workers = counter(m.MAX_WORKERS)
    initialized = counter(m.INITIALIZED_WORKERS)
    submitted = counter(m.SUBMITTED)
    wait = HistogramMetricFamily(m.WAIT.name, m.WAIT.help, labels=labels)
    running = gauge(m.RUNNING)
    duration = HistogramMetricFamily(m.DURATION.name, m.DURATION.help, labels=[*labels, "result"])
    queued = gauge(m.QUEUED)
    workers = gauge(m.WORKERS)
    workers_max = gauge(m.WORKERS_MAX)
    cancelled = counter(m.CANCELLED)
    rejected = counter(m.REJECTED, ("reason",))
    busy = counter(m.BUSY)
    oldest_queued = gauge(m.OLDEST_QUEUED)
    oldest_running = gauge(m.OLDEST_RUNNING)

    for key, t in sorted(totals.items()):
        lv = list(key)
        layout = layouts[key]
        max_workers.add_metric(lv, t.max_workers_total)
        initialized.add_metric(lv, round(t.initialized))
        submitted.add_metric(lv, t.submitted)
        wait.add_metric(lv, _buckets(layout.wait_bounds, t.wait), t.wait_sum)
        running.add_metric(lv, t.running)
        duration.add_metric(
            [*lv, "completed"],
            _buckets(layout.duration_bounds, t.completed),
            t.completed_sum,
        )
        duration.add_metric(
            [*lv, "failed"], _buckets(layout.duration_bounds, t.failed), t.failed_sum
        )
        queued.add_metric(lv, t.queued)
        if t.workers is not None:
            workers.add_metric(lv, t.workers)
        if t.workers_max is not None:
            workers_max.add_metric(lv, t.workers_max)
        cancelled.add_metric(lv, t.cancelled)
        rejected.add_metric([*lv, "shutdown"], t.rejected_shutdown)
        rejected.add_metric([*lv, "broken"], t.rejected_broken)
        busy.add_metric(lv, t.busy)
        oldest_queued.add_metric(lv, t.oldest_queued_age)
        oldest_running.add_metric(lv, t.oldest_running_age)

    yield from (
        max_workers,
        initialized,
        submitted,
        wait,
        running,
        duration,
        queued,
        workers,
        workers_max,
        cancelled,
        rejected,
        busy,
        oldest_queued,
        oldest_running,
    )


def _buckets(bounds: tuple[float, ...], counts: list[float]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(bounds, counts):
        running += count
        out.append((floatToGoString(bound), running))
    running += counts[-1]
    out.append(("+Inf", running))
    return out


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ExecutorCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry | None) -> ExecutorCollector:
    """Return the collector of ``registry`` (default: the global one), registering it once."""
    registry = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = ExecutorCollector()
            registry.register(collector)
            _collectors[registry] = collector
        return collector

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
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from . import metrics as m
from ._layout import Layout
from ._state import ExecutorState, Totals

__all__ = ["ExecutorCollector", "all_collectors", "collector_for"]


class _Group:
    """The instances exported under one (executor, executor_type) label pair."""

    __slots__ = ("busy_floor", "layout", "retired", "states")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.states: list[ExecutorState] = []
        self.retired: Totals | None = None
        # busy_seconds mixes finished durations with the elapsed part of running tasks;
        # read while a task ends it may dip by a hair.  A counter must never go back.
        self.busy_floor = 0.0

    def read(self, now: float) -> Totals:
        # Fresh objects only: Totals.add mutates its left side.
        total = None if self.retired is None else self.retired.retire()
        kept = []
        for state in self.states:
            t = state.read(now)
            if state.closed and not state.unsettled() and t.running == 0:
                # Quiescent and its executor gone: keep only its counters.
                t = t.retire()
                if self.retired is None:
                    self.retired = t.retire()
                else:
                    self.retired.add(t)
            else:
                kept.append(state)
            if total is None:
                total = t
            else:
                total.add(t)
        self.states = kept
        if total is None:
            total = Totals(self.layout)
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

    def read(self) -> dict[tuple[str, str], tuple[Totals, Layout]]:
        """Return the totals of every group, read now."""
        now = time.monotonic()
        with self._lock:
            return {key: (group.read(now), group.layout) for key, group in self._groups.items()}

    def describe(self) -> Iterable[Metric]:
        """Name the families without reading any executor (used at registration)."""
        return list(_families({}))

    def collect(self) -> Iterable[Metric]:
        """Build every family from the current totals."""
        return list(_families(self.read()))


def _families(totals: dict[tuple[str, str], tuple[Totals, Layout]]) -> Iterator[Metric]:
    # Samples are built directly (not through add_metric) with label dicts shared
    # between families and bucket bounds formatted once per layout: a scrape of many
    # executors is mostly this loop.
    labels = list(m.BASE_LABELS)
    families = {
        d.name: _FAMILY[d.type](d.name, d.help, labels=labels + list(d.labels[2:]))  # type: ignore[call-arg]
        for d in m.METRICS
    }
    les: dict[tuple[float, ...], list[str]] = {}

    def add(d: m.MetricDefinition, base: dict[str, str], value: float) -> None:
        fam = families[d.name]
        fam.samples.append(_sample(fam.name + _SUFFIX[d.type], base, value))

    def histogram(
        d: m.MetricDefinition,
        base: dict[str, str],
        bounds: tuple[float, ...],
        counts: list[float],
        total: float,
    ) -> None:
        name = families[d.name].name
        samples = families[d.name].samples
        strs = les.get(bounds)
        if strs is None:
            strs = les[bounds] = [*map(floatToGoString, bounds), "+Inf"]
        acc = 0.0
        bucket = name + "_bucket"
        for le, count in zip(strs, counts):
            acc += count
            samples.append(_sample(bucket, {**base, "le": le}, acc))
        samples.append(_sample(name + "_count", base, acc))
        samples.append(_sample(name + "_sum", base, total))

    for key, (t, layout) in sorted(totals.items()):
        base = dict(zip(m.BASE_LABELS, key))
        add(m.MAX_WORKERS, base, t.max_workers_total)
        add(m.INITIALIZED_WORKERS, base, round(t.initialized))
        add(m.SUBMITTED, base, t.submitted)
        histogram(m.WAIT, base, layout.wait_bounds, t.wait, t.wait_sum)
        add(m.RUNNING, base, t.running)
        for result, counts, total in (
            ("completed", t.completed, t.completed_sum),
            ("failed", t.failed, t.failed_sum),
        ):
            histogram(
                m.DURATION, {**base, "result": result}, layout.duration_bounds, counts, total
            )
        add(m.QUEUED, base, t.queued)
        if t.workers is not None:
            add(m.WORKERS, base, t.workers)
        if t.workers_max is not None:
            add(m.WORKERS_MAX, base, t.workers_max)
        add(m.CANCELLED, base, t.cancelled)
        add(m.REJECTED, {**base, "reason": "shutdown"}, t.rejected_shutdown)
        add(m.REJECTED, {**base, "reason": "broken"}, t.rejected_broken)
        add(m.BUSY, base, t.busy)
        add(m.OLDEST_QUEUED, base, t.oldest_queued_age)
        add(m.OLDEST_RUNNING, base, t.oldest_running_age)

    yield from families.values()


# Sample is a NamedTuple whose generated __new__ is Python code; building the tuple
# directly is several times faster, and a scrape builds thousands.  Its optional fields
# (timestamp, exemplar, and more in newer prometheus_client releases) are all None.
_OPTIONAL_FIELDS = (None,) * (len(Sample._fields) - 3)


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return tuple.__new__(Sample, (name, labels, value, *_OPTIONAL_FIELDS))


_FAMILY: dict[str, type[Metric]] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
}
# A counter family is named without _total; its sample carries it.
_SUFFIX = {"counter": "_total", "gauge": "", "histogram": ""}


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


def all_collectors() -> list[ExecutorCollector]:
    """Return the collectors of every registry still alive (multi-process mode reads them)."""
    with _collectors_lock:
        return list(_collectors.values())

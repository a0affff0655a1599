"""The custom collector: sums executor states by (id, type) at scrape time.

One collector is registered per registry, the first time an executor is exported to
it; it exposes every metric family of :mod:`executor_exporter.metrics`.  Instances
sharing an id and type form a *group*; an instance whose executor is gone is folded into
the group's retired counters once it is quiescent, so counters never go back and the
memory held stays bounded however many executors come and go.  Folding happens when a
scrape reads the groups, and also as new instances are added, so that a process never
scraped (or scraped rarely) does not hold every dropped pool's slots and shared memory.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from itertools import accumulate, repeat

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

# add() folds dropped instances once the instances held reach twice what the last fold
# (or read) left, and at least this many: O(1) amortized per added instance.
_FOLD_MIN = 64


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
        self._render = _Renderer()
        self._instances = 0  # held in the groups' states, as of the last count
        self._fold_at = _FOLD_MIN

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
            self._instances += 1
            if self._instances >= self._fold_at:
                # Reading a group folds its dropped, quiescent instances.
                now = time.monotonic()
                for group in self._groups.values():
                    if group.states:
                        group.read(now)
                self._count_instances()

    def read(self) -> dict[tuple[str, str], tuple[Totals, Layout]]:
        """Return the totals of every group, read now."""
        now = time.monotonic()
        with self._lock:
            totals = {key: (g.read(now), g.layout) for key, g in self._groups.items()}
            self._count_instances()
            return totals

    def _count_instances(self) -> None:
        self._instances = sum(len(group.states) for group in self._groups.values())
        self._fold_at = max(_FOLD_MIN, 2 * self._instances)

    def describe(self) -> Iterable[Metric]:
        """Name the families without reading any executor (used at registration)."""
        return self._render({})

    def collect(self) -> Iterable[Metric]:
        """Build every family from the current totals."""
        return self._render(self.read())


#: A histogram's value in :func:`group_points`: bounds, per-bucket counts (the last one
#: is +Inf), sum.
HistogramPoint = tuple[tuple[float, ...], list[float], float]
#: One exported value of a group: its metric, the values of the labels that metric adds
#: to ``executor`` and ``executor_type``, and a number or a :data:`HistogramPoint`.
Point = tuple[m.MetricDefinition, tuple[str, ...], "float | HistogramPoint"]


def group_points(t: Totals, layout: Layout) -> list[Point]:
    """Everything one group exports, in exposition order.

    The one list of what a group shows: the collector renders it, and so does the
    multi-process writer (``workers`` and ``workers_max`` are left out where unknown).
    """
    points: list[Point] = [
        (m.MAX_WORKERS, (), t.max_workers_total),
        (m.INITIALIZED_WORKERS, (), round(t.initialized)),
        (m.SUBMITTED, (), t.submitted),
        (m.WAIT, (), (layout.wait_bounds, t.wait, t.wait_sum)),
        (m.RUNNING, (), t.running),
        (m.DURATION, ("completed",), (layout.duration_bounds, t.completed, t.completed_sum)),
        (m.DURATION, ("failed",), (layout.duration_bounds, t.failed, t.failed_sum)),
        (m.QUEUED, (), t.queued),
    ]
    if t.workers is not None:
        points.append((m.WORKERS, (), t.workers))
    if t.workers_max is not None:
        points.append((m.WORKERS_MAX, (), t.workers_max))
    points += [
        (m.CANCELLED, (), t.cancelled),
        (m.REJECTED, ("shutdown",), t.rejected_shutdown),
        (m.REJECTED, ("broken",), t.rejected_broken),
        (m.BUSY, (), t.busy),
        (m.OLDEST_QUEUED, (), t.oldest_queued_age),
        (m.OLDEST_RUNNING, (), t.oldest_running_age),
    ]
    return points


class _Renderer:
    """Turns group totals into metric families, as cheaply as it can.

    A scrape of many executors is mostly building samples.  Label dicts are made once
    per group and reused by every scrape (nothing downstream mutates them, and samples
    are immutable), a histogram's bucket samples are rebuilt only when one of its counts
    moved, and then in one C-level pass (see ``_new_samples``).  Both caches hold an
    entry per group the collector keeps (it keeps them all), so they add no growth of
    their own; concurrent scrapes may both refresh an entry, each with true values.
    """

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str, str, tuple[str, ...]], dict[str, str]] = {}
        # The bucket samples of each histogram at the last scrape, by their counts (a
        # group's bounds never change: the collector refuses other buckets for its id).
        self._buckets: dict[
            tuple[str, str, str, tuple[str, ...]], tuple[list[float], list[Sample]]
        ] = {}

    def __call__(self, totals: dict[tuple[str, str], tuple[Totals, Layout]]) -> list[Metric]:
        base_names = list(m.BASE_LABELS)
        families = {
            d.name: _FAMILY[d.type](d.name, d.help, labels=base_names + list(d.labels[2:]))  # type: ignore[call-arg]
            for d in m.METRICS
        }
        cached_labels, cached_buckets = self._labels, self._buckets
        for key, (t, layout) in sorted(totals.items()):
            for d, extra, value in group_points(t, layout):
                family = families[d.name]
                samples = family.samples
                lkey = (*key, d.name, extra)
                labels = cached_labels.get(lkey)
                if labels is None:
                    labels = cached_labels[lkey] = {
                        **dict(zip(m.BASE_LABELS, key)),
                        **dict(zip(d.labels[2:], extra)),
                    }
                if not isinstance(value, tuple):
                    samples.append(_new_sample(family.name + _SUFFIX[d.type], labels, value))
                    continue
                bounds, counts, total = value
                cumulative = list(accumulate(counts))
                cached = cached_buckets.get(lkey)
                if cached is None or cached[0] != cumulative:
                    # Most buckets of most executors did not move since the last scrape.
                    les = (
                        [{**labels, "le": le} for le in [*map(floatToGoString, bounds), "+Inf"]]
                        if cached is None
                        else [sample.labels for sample in cached[1]]
                    )
                    name = family.name + "_bucket"
                    cached = cached_buckets[lkey] = (
                        cumulative,
                        _new_samples(name, les, cumulative),
                    )
                samples += cached[1]
                samples.append(_new_sample(family.name + "_count", labels, cumulative[-1]))
                samples.append(_new_sample(family.name + "_sum", labels, total))
        return list(families.values())


# Sample is a NamedTuple whose generated __new__ is Python code; building the tuple
# directly is several times faster, and a scrape builds thousands.  Its optional fields
# (timestamp, exemplar, and more in newer prometheus_client releases) are all None.
_OPTIONAL_FIELDS = (None,) * (len(Sample._fields) - 3)


def _new_sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return tuple.__new__(Sample, (name, labels, value, *_OPTIONAL_FIELDS))


def _new_samples(name: str, labels: list[dict[str, str]], values: list[float]) -> list[Sample]:
    # map() and zip() over C callables: no Python frame per sample.
    rows = zip(repeat(name), labels, values, *map(repeat, _OPTIONAL_FIELDS))
    return list(map(tuple.__new__, repeat(Sample), rows))


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

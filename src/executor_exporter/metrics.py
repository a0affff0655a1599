"""The metric definitions: one table that the collector, the docs and the tests read.

Names, types and labels of the first six entries are frozen by the original spec; the
rest come on top.  ``README.md`` carries a table generated from :data:`METRICS`
(``python -m executor_exporter table``) and a test fails when the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["DEFAULT_BUCKETS", "METRICS", "MetricDefinition", "markdown_table"]

#: Bucket bounds in seconds shared by the wait and duration histograms: roughly
#: logarithmic from 100 microseconds (a task handed to an idle thread) to half an hour
#: (a backlog that does not drain).  Queue waits span that whole range in practice;
#: 17 bounds keep a histogram at 18 series per executor.
DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)

MetricType = Literal["counter", "gauge", "histogram"]
BASE_LABELS: Final = ("executor", "executor_type")


@dataclass(frozen=True)
class MetricDefinition:
    """One exported metric family.

    ``name`` is the name as exposed in the text format (a counter's ``_total`` included).
    """

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    frozen: bool = False


def _m(
    name: str, type_: MetricType, help_: str, extra: tuple[str, ...] = (), *, frozen: bool = False
) -> MetricDefinition:
    return MetricDefinition(name, type_, BASE_LABELS + extra, help_, frozen)


MAX_WORKERS = _m(
    "python_executor_max_workers_total",
    "counter",
    "max_workers added up over the executor instances sharing an id.",
    frozen=True,
)
INITIALIZED_WORKERS = _m(
    "python_executor_initialized_workers_total",
    "counter",
    "Workers whose initializer ran to completion (counted without a user initializer too).",
    frozen=True,
)
SUBMITTED = _m(
    "python_executor_submitted_tasks_total",
    "counter",
    "Tasks accepted by submit or map; each map item is a task.",
    frozen=True,
)
WAIT = _m(
    "python_executor_task_wait_seconds",
    "histogram",
    "Time from submission to the start of execution.",
    frozen=True,
)
RUNNING = _m(
    "python_executor_running_tasks_total",
    "gauge",
    "Tasks started and not yet done.",
    frozen=True,
)
DURATION = _m(
    "python_executor_tasks_duration_seconds",
    "histogram",
    "Execution time of finished tasks, by result (completed or failed).",
    ("result",),
    frozen=True,
)
QUEUED = _m(
    "python_executor_queued_tasks",
    "gauge",
    "Tasks submitted and neither started nor cancelled.",
)
WORKERS = _m(
    "python_executor_workers",
    "gauge",
    "Worker threads or processes alive now (left out where the executor hides them).",
)
WORKERS_MAX = _m(
    "python_executor_workers_max",
    "gauge",
    "max_workers of the instances not shut down (left out where unknown).",
)
CANCELLED = _m(
    "python_executor_cancelled_tasks_total",
    "counter",
    "Tasks cancelled before they started.",
)
REJECTED = _m(
    "python_executor_rejected_tasks_total",
    "counter",
    "Submissions refused, by reason (shutdown or broken); never counted as submitted.",
    ("reason",),
)
BUSY = _m(
    "python_executor_busy_seconds_total",
    "counter",
    "Worker time spent executing tasks, running ones included; rate() over workers_max "
    "is utilization.",
)
OLDEST_QUEUED = _m(
    "python_executor_oldest_queued_task_age_seconds",
    "gauge",
    "Age of the oldest task still waiting to start (0 when none).",
)
OLDEST_RUNNING = _m(
    "python_executor_oldest_running_task_age_seconds",
    "gauge",
    "Age of the longest-running unfinished task (0 when none).",
)

#: Every metric family, in exposition order.
METRICS: Final[tuple[MetricDefinition, ...]] = (
    MAX_WORKERS,
    INITIALIZED_WORKERS,
    SUBMITTED,
    WAIT,
    RUNNING,
    DURATION,
    QUEUED,
    WORKERS,
    WORKERS_MAX,
    CANCELLED,
    REJECTED,
    BUSY,
    OLDEST_QUEUED,
    OLDEST_RUNNING,
)


def markdown_table() -> str:
    """Return the metric table of the README, generated from :data:`METRICS`."""
    rows = [
        "| Name | Type | Labels | Meaning |",
        "|---|---|---|---|",
    ]
    for m in METRICS:
        frozen = " (frozen)" if m.frozen else ""
        rows.append(f"| `{m.name}` | {m.type}{frozen} | {', '.join(m.labels)} | {m.help} |")
    return "\n".join(rows) + "\n"

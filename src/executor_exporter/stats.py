"""Typed, frozen snapshots of an executor's numbers, for health checks and logs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExecutorStats", "HistogramStats"]


@dataclass(frozen=True)
class HistogramStats:
    """One histogram: ``bounds`` are the finite bucket bounds in seconds and
    ``buckets`` the cumulative counts for each bound, then for ``+Inf``."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """Number of observations."""
        return self.buckets[-1] if self.buckets else 0


@dataclass(frozen=True)
class ExecutorStats:
    """The numbers behind the metrics, for one executor instance, at one moment.

    ``workers`` and ``workers_max`` are ``None`` where the executor does not tell (a
    proxied executor of unknown size).  Ages are in seconds, 0 when nothing waits or
    runs.  At quiescence ``submitted == queued + running + completed + failed +
    cancelled``.
    """

    executor_id: str
    executor_type: str
    max_workers_total: int
    initialized_workers: int
    submitted: int
    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    rejected_shutdown: int
    rejected_broken: int
    workers: int | None
    workers_max: int | None
    busy_seconds: float
    oldest_queued_age: float
    oldest_running_age: float
    wait: HistogramStats
    completed_duration: HistogramStats
    failed_duration: HistogramStats

    @property
    def finished(self) -> int:
        """Tasks done after starting or failed without starting (not cancelled)."""
        return self.completed + self.failed

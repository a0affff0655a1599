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

    def __str__(self) -> str:
        if not self.count:
            return "count 0"
        return f"count {self.count}, mean {_seconds(self.sum / self.count)}"


def _seconds(value: float) -> str:
    """A duration as people read it: 950 us, 12.3 ms, 4.56 s."""
    if value == 0:
        return "0 s"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


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

    def __str__(self) -> str:
        """Several lines for people (``print(pool.stats())``); ``repr()`` has every field."""
        workers = "?" if self.workers is None else self.workers
        most = "?" if self.workers_max is None else self.workers_max
        return "\n".join(
            [
                f"executor {self.executor_id!r} ({self.executor_type})",
                f"  tasks:    {self.submitted} submitted, {self.queued} queued, "
                f"{self.running} running, {self.completed} completed, {self.failed} failed, "
                f"{self.cancelled} cancelled",
                f"  rejected: {self.rejected_shutdown} after shutdown, "
                f"{self.rejected_broken} by a broken pool",
                f"  workers:  {workers} alive of {most} allowed, "
                f"{self.initialized_workers} initialized",
                f"  busy:     {_seconds(self.busy_seconds)}; oldest queued "
                f"{_seconds(self.oldest_queued_age)}, oldest running "
                f"{_seconds(self.oldest_running_age)}",
                f"  wait:     {self.wait}",
                f"  duration: completed {self.completed_duration}; failed {self.failed_duration}",
            ]
        )

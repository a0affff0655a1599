"""gunicorn settings of the gunicorn test: the standard prometheus_client setup."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    """Drop the live gauges of a worker that exited (its counters stay)."""
    multiprocess.mark_process_dead(worker.pid)

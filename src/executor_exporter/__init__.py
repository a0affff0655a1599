"""Prometheus metrics for :mod:`concurrent.futures` executors.

``ThreadPoolExecutor`` and ``ProcessPoolExecutor`` are drop-in replacements of the
stdlib classes; ``ExecutorExporter`` with ``InstrumentedExecutorProxy`` instrument any
other executor.  Metrics are computed when scraped, by one collector per registry.
Under gunicorn and other pre-fork servers, :mod:`executor_exporter.multiprocess` writes
them where prometheus_client's ``MultiProcessCollector`` reads (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

from .collector import ExecutorCollector
from .exporter import ExecutorExporter
from .instrumentation import instrument, instrument_asyncio, is_instrumented, uninstrument
from .metrics import DEFAULT_BUCKETS, METRICS, MetricDefinition
from .process import ProcessPoolExecutor
from .proxy import InstrumentedExecutorProxy
from .stats import ExecutorStats, HistogramStats
from .thread import ThreadPoolExecutor

__all__ = [
    "DEFAULT_BUCKETS",
    "METRICS",
    "ExecutorCollector",
    "ExecutorExporter",
    "ExecutorStats",
    "HistogramStats",
    "InstrumentedExecutorProxy",
    "MetricDefinition",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "instrument",
    "instrument_asyncio",
    "is_instrumented",
    "uninstrument",
]

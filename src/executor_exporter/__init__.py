"""Prometheus metrics for :mod:`concurrent.futures` executors.

``ThreadPoolExecutor``, ``ProcessPoolExecutor`` and (3.14+) ``InterpreterPoolExecutor``
are drop-in replacements of the stdlib classes; ``ExecutorExporter`` with
``InstrumentedExecutorProxy`` instrument any other executor.  Metrics are computed when
scraped, by one collector per registry.
Under gunicorn and other pre-fork servers, :mod:`executor_exporter.multiprocess` writes
them where prometheus_client's ``MultiProcessCollector`` reads (``PROMETHEUS_MULTIPROC_DIR``).

On a Python whose ``concurrent.futures`` internals it does not recognise, the pools take
a path built on public API only (same behaviour, same metrics) and warn once;
``EXECUTOR_EXPORTER_FALLBACK=1`` in the environment chooses that path for the pools made
while it is set.
"""

from __future__ import annotations

import sys
from typing import Any

from .collector import ExecutorCollector
from .exporter import ExecutorExporter
from .instrumentation import instrument, instrument_asyncio, is_instrumented, uninstrument
from .metrics import DEFAULT_BUCKETS, METRICS, MetricDefinition
from .process import ProcessPoolExecutor
from .proxy import InstrumentedExecutorProxy
from .stats import ExecutorStats, HistogramStats
from .thread import ThreadPoolExecutor

__version__ = "0.2.0"

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
    "__version__",
    "instrument",
    "instrument_asyncio",
    "is_instrumented",
    "uninstrument",
]

try:
    from .interpreter import InterpreterPoolExecutor
except ImportError:  # pragma: py-lt-314 (before 3.14, or a build without sub-interpreters)

    def __getattr__(name: str) -> Any:
        # As with the stdlib there: the name is absent, and the error says why.
        if name == "InterpreterPoolExecutor":
            raise AttributeError(
                "InterpreterPoolExecutor needs Python 3.14 or newer with sub-interpreters "
                f"(this is {sys.version.split()[0]}), as "
                "concurrent.futures.InterpreterPoolExecutor does"
            )
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

else:  # pragma: py-gte-314
    __all__ += ["InterpreterPoolExecutor"]

"""A WSGI app for the gunicorn test: every worker process has its own pool "web".

gunicorn imports this module in each worker, after fork (no ``preload_app``), so each
worker creates and exports its own pool, as the README asks.

- ``GET /work?n=K`` runs K short tasks on the pool and answers this worker's pid;
- ``GET /metrics`` serves what ``MultiProcessCollector`` reads from
  ``PROMETHEUS_MULTIPROC_DIR``: the numbers of every worker, dead ones' counters included.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from executor_exporter import ThreadPoolExecutor

POOL_SIZE = 4
pool = ThreadPoolExecutor(POOL_SIZE, executor_id="web")


def task() -> None:
    time.sleep(0.01)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/work":
        n = int(parse_qs(environ.get("QUERY_STRING", ""))["n"][0])
        concurrent.futures.wait([pool.submit(task) for _ in range(n)])
        body, content_type = str(os.getpid()).encode(), "text/plain"
    elif path == "/metrics":
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        body, content_type = generate_latest(registry), CONTENT_TYPE_LATEST
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", content_type)])
    return [body]

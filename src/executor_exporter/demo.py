"""A demo: instrumented pools under a realistic mixed workload, served to Prometheus.

``python -m executor_exporter demo`` runs :func:`run_demo`.  Three pools get traffic:

- ``api``, a thread pool of 8 serving small requests, with bursts that queue up and
  impatient clients that hang up (their queued requests are cancelled);
- ``reports``, a thread pool of 2 running long-ish reports, kept busy enough that a
  backlog forms now and then (a re-requested report cancels the queued older one);
- ``render``, a process pool of 2 doing CPU work, when
  :class:`executor_exporter.ProcessPoolExecutor` is available.

A few percent of the tasks fail.  Nothing here starts a thread, a process or a server
until :func:`run_demo` is called.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, TextIO

from prometheus_client import start_http_server

from .stats import ExecutorStats
from .thread import ThreadPoolExecutor

__all__ = ["DemoPool", "TaskError", "metrics_url", "run_demo", "summary_line"]


class TaskError(Exception):
    """The failure a demo task raises now and then, on purpose."""


class InstrumentedPool(Protocol):
    """What the demo needs of an instrumented executor."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...

    def stats(self) -> ExecutorStats: ...


#: Feeds one pool until the event is set.
Traffic = Callable[[InstrumentedPool, random.Random, threading.Event], None]


@dataclass(frozen=True)
class DemoPool:
    """One pool of the demo: its executor, its size and the traffic that feeds it."""

    name: str
    executor: InstrumentedPool
    workers: int
    traffic: Traffic


# -- the tasks (module level, so that a process pool can pickle them) -------------------


def handle_request(seconds: float, fail: bool) -> int:
    """Serve one API request: mostly waiting on a backend."""
    time.sleep(seconds)
    if fail:
        raise TaskError("backend returned 503")
    return 200


def build_report(seconds: float, fail: bool) -> str:
    """Build one report: a slow query, then formatting."""
    time.sleep(seconds)
    if fail:
        raise TaskError("report query timed out")
    return "report.pdf"


def render_tile(size: int, fail: bool) -> int:
    """Render one tile: pure CPU work."""
    checksum = 0
    for i in range(size):
        checksum = (checksum * 31 + i) % 1_000_003
    if fail:
        raise TaskError("tile out of bounds")
    return checksum


def _ignore_sigint() -> None:
    """Process-pool initializer: Ctrl-C is the parent's business, not the workers'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- the traffic --------------------------------------------------------------------------


def api_traffic(pool: InstrumentedPool, rng: random.Random, stop: threading.Event) -> None:
    """About 40 requests a second, plus a burst of 60-120 every 2-4 seconds that queues up;
    a tenth of a burst's requests are cancelled 50 ms later if still waiting."""

    def request() -> Future[Any]:
        return pool.submit(handle_request, rng.uniform(0.005, 0.030), rng.random() < 0.03)

    next_burst = time.monotonic() + rng.uniform(1.0, 2.0)
    while not stop.wait(rng.expovariate(40.0)):
        request()
        if time.monotonic() < next_burst:
            continue
        burst = [request() for _ in range(rng.randint(60, 120))]
        next_burst = time.monotonic() + rng.uniform(2.0, 4.0)
        if stop.wait(0.05):
            return
        for future in burst:
            if rng.random() < 0.1:
                future.cancel()  # does nothing once the request has started


def report_traffic(pool: InstrumentedPool, rng: random.Random, stop: threading.Event) -> None:
    """About two reports a second of 0.2-1.2 s each for two workers (~70% busy); now and
    then a report is requested again and the previous one is cancelled if still queued."""
    previous: Future[Any] | None = None
    while not stop.wait(rng.expovariate(2.0)):
        future = pool.submit(build_report, rng.uniform(0.2, 1.2), rng.random() < 0.06)
        if previous is not None and rng.random() < 0.15:
            previous.cancel()
        previous = future


def render_traffic(pool: InstrumentedPool, rng: random.Random, stop: threading.Event) -> None:
    """A batch of 4-12 CPU-bound tiles every 0.5-1.5 seconds."""
    while not stop.wait(rng.uniform(0.5, 1.5)):
        for _ in range(rng.randint(4, 12)):
            pool.submit(render_tile, rng.randint(200_000, 800_000), rng.random() < 0.04)


def _process_pool_class() -> Callable[..., InstrumentedPool] | None:
    """Return :class:`executor_exporter.ProcessPoolExecutor`, or None where it is missing."""
    try:
        from . import ProcessPoolExecutor
    except ImportError:
        return None
    return ProcessPoolExecutor


def make_pools() -> list[DemoPool]:
    """Create the demo's pools (the process pool's workers start here, before any thread)."""
    pools = [
        DemoPool("api", ThreadPoolExecutor(8, executor_id="api"), 8, api_traffic),
        DemoPool("reports", ThreadPoolExecutor(2, executor_id="reports"), 2, report_traffic),
    ]
    process_pool = _process_pool_class()
    if process_pool is not None:
        render = process_pool(2, initializer=_ignore_sigint, executor_id="render")
        # Start the workers now: forking once other threads run is unsafe.
        render.submit(render_tile, 1, False).result()
        pools.append(DemoPool("render", render, 2, render_traffic))
    return pools


def _feed(pool: DemoPool, stop: threading.Event, out: TextIO) -> None:
    """Run one pool's traffic; a broken pool (a killed worker process) ends it."""
    try:
        pool.traffic(pool.executor, random.Random(), stop)
    except BrokenExecutor as exc:
        print(f"{pool.name}: pool broken, traffic stopped ({exc})", file=out, flush=True)


# -- reporting ----------------------------------------------------------------------------


def metrics_url(host: str, port: int) -> str:
    """The URL to scrape for a server bound to ``host`` and ``port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def summary_line(
    name: str, now: ExecutorStats, before: ExecutorStats | None, seconds: float, workers: int
) -> str:
    """One pool's numbers: totals so far, then the mean wait and the utilization over the
    last ``seconds`` (since ``before``; since the start when ``before`` is None)."""
    wait_count = now.wait.count - (before.wait.count if before else 0)
    wait_sum = now.wait.sum - (before.wait.sum if before else 0.0)
    busy = now.busy_seconds - (before.busy_seconds if before else 0.0)
    mean_wait = f"{1000.0 * wait_sum / wait_count:7.1f}ms" if wait_count else "      -  "
    utilization = busy / (seconds * workers) if seconds > 0 and workers else 0.0
    return (
        f"{name:<8} submitted={now.submitted:<6} queued={now.queued:<4} "
        f"running={now.running:<2} completed={now.completed:<6} failed={now.failed:<4} "
        f"cancelled={now.cancelled:<4} mean_wait={mean_wait} util={utilization:4.0%}"
    )


def _watch(pools: list[DemoPool], duration: float | None, interval: float, out: TextIO) -> None:
    """Print a summary line per pool every ``interval`` seconds until ``duration`` is up."""
    start = last = time.monotonic()
    deadline = None if duration is None else start + duration
    before = {pool.name: pool.executor.stats() for pool in pools}
    while deadline is None or last < deadline:
        tick = last + interval if deadline is None else min(last + interval, deadline)
        time.sleep(max(0.0, tick - time.monotonic()))
        now = time.monotonic()
        for pool in pools:
            stats = pool.executor.stats()
            line = summary_line(pool.name, stats, before[pool.name], now - last, pool.workers)
            print(f"[{now - start:6.1f}s] {line}", file=out, flush=True)
            before[pool.name] = stats
        last = now


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _stop_signals() -> Iterator[None]:
    """Let SIGINT and SIGTERM stop the demo (as KeyboardInterrupt in the main thread), even
    where SIGINT came ignored from the parent, as in a non-interactive shell's ``cmd &``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _serve(
    host: str, port: int, duration: float | None, interval: float, out: TextIO
) -> list[DemoPool]:
    """Serve ``/metrics`` under traffic until ``duration`` is up or KeyboardInterrupt; shut
    everything down on the way out and return the pools, for the final summary."""
    pools: list[DemoPool] = []
    feeders: list[threading.Thread] = []
    stop = threading.Event()
    server = None
    try:
        pools = make_pools()
        server, _ = start_http_server(port, addr=host)
        print(f"serving metrics at {metrics_url(host, server.server_port)}", file=out, flush=True)
        print(f"executors: {', '.join(pool.name for pool in pools)}", file=out, flush=True)
        for pool in pools:
            feeder = threading.Thread(
                target=_feed, args=(pool, stop, out), name=f"demo-{pool.name}", daemon=True
            )
            feeder.start()
            feeders.append(feeder)
        _watch(pools, duration, interval, out)
    except KeyboardInterrupt:
        print("interrupted, shutting down", file=out, flush=True)
    finally:
        stop.set()
        for feeder in feeders:
            feeder.join()
        for pool in pools:
            pool.executor.shutdown(wait=True, cancel_futures=True)
        if server is not None:
            server.shutdown()
            server.server_close()
    return pools


def run_demo(
    host: str = "127.0.0.1",
    port: int = 9464,
    duration: float | None = None,
    interval: float = 5.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo: serve ``/metrics`` on ``host:port`` (port 0 picks a free one) and
    print live summaries to ``out`` (default: standard output) every ``interval``
    seconds, for ``duration`` seconds (None: until Ctrl-C or SIGTERM).  Either way the
    pools are shut down, queued tasks cancelled, a final summary is printed and 0 is
    returned."""
    out = sys.stdout if out is None else out  # looked up now: callers may replace it
    started = time.monotonic()
    with _stop_signals():
        pools = _serve(host, port, duration, interval, out)
        elapsed = time.monotonic() - started
        print(f"final summary after {elapsed:.1f}s:", file=out, flush=True)
        for pool in pools:
            line = summary_line(pool.name, pool.executor.stats(), None, elapsed, pool.workers)
            print(f"  {line}", file=out, flush=True)
    return 0

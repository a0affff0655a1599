"""``executor-exporter top``: a live terminal view of the pools behind ``/metrics`` URLs.

Each frame comes from the last two scrapes of every endpoint: rates and quantiles are
taken over the interval between them, from counter and histogram-bucket deltas, as
Prometheus's ``rate()`` and ``histogram_quantile()`` would (a counter that went back,
a restarted process, counts from zero).  The exposition is parsed by prometheus_client's
own text parser; the terminal is driven with ANSI sequences and ``termios``, so nothing
beyond the standard library and prometheus-client is needed.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DEFAULT_URL",
    "Endpoint",
    "Row",
    "Scrape",
    "ScrapeError",
    "parse",
    "quantile",
    "render",
    "rows",
    "run_top",
    "scrape",
]

DEFAULT_URL = "http://127.0.0.1:9464/metrics"

_P = "python_executor_"
_BUSY = _P + "busy_seconds_total"
_SUBMITTED = _P + "submitted_tasks_total"
_RUNNING = _P + "running_tasks_total"
_QUEUED = _P + "queued_tasks"
_WORKERS_MAX = _P + "workers_max"
_REJECTED = _P + "rejected_tasks_total"
_OLDEST_QUEUED = _P + "oldest_queued_task_age_seconds"
_OLDEST_RUNNING = _P + "oldest_running_task_age_seconds"
_WAIT = _P + "task_wait_seconds"
_DURATION = _P + "tasks_duration_seconds"

#: A pool is flagged saturated at this utilization, failing at this failed share.
SATURATED = 0.9
FAILING = 0.05


class ScrapeError(Exception):
    """An endpoint that is down, or answers something that is not these metrics."""


@dataclass
class Pool:
    """One (executor, executor_type) of one scrape: the samples that matter here."""

    values: dict[str, float] = field(default_factory=dict)
    #: Cumulative bucket counts by upper bound (+Inf included), wait and duration.
    wait: dict[float, float] = field(default_factory=dict)
    duration: dict[float, float] = field(default_factory=dict)
    completed: float = 0.0
    failed: float = 0.0


@dataclass
class Scrape:
    """One scrape of one endpoint."""

    at: float
    pools: dict[tuple[str, str], Pool]


def parse(text: str, at: float = 0.0) -> Scrape:
    """Read the executor metrics of an exposition; raise ScrapeError if there are none."""
    pools: dict[tuple[str, str], Pool] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError and friends on non-metrics
        raise ScrapeError(f"not a Prometheus text exposition ({exc})") from None
    for family in families:
        for s in family.samples:
            if not s.name.startswith(_P) or "executor" not in s.labels:
                continue
            key = (s.labels["executor"], s.labels.get("executor_type", ""))
            pool = pools.setdefault(key, Pool())
            if s.name in (_WAIT + "_bucket", _DURATION + "_bucket"):
                bound = float(s.labels["le"])
                buckets = pool.wait if s.name.startswith(_WAIT) else pool.duration
                buckets[bound] = buckets.get(bound, 0.0) + s.value  # both results add up
            elif s.name == _DURATION + "_count":
                if s.labels.get("result") == "failed":
                    pool.failed += s.value
                else:
                    pool.completed += s.value
            else:
                pool.values[s.name] = pool.values.get(s.name, 0.0) + s.value
    if not pools:
        raise ScrapeError("no python_executor_* metrics in the answer")
    return Scrape(at, pools)


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """Fetch and parse one endpoint; raise ScrapeError with one readable line."""
    try:
        # Inside the try: Request() itself refuses a malformed URL with a ValueError.
        request = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ScrapeError(str(exc.reason)) from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        raise ScrapeError(str(exc) or type(exc).__name__) from None
    return parse(body, time.monotonic())


def _delta(now: float, before: float) -> float:
    # A counter that went back was reset (its process restarted): it counts from zero.
    return now - before if now >= before else now


def quantile(q: float, now: dict[float, float], before: dict[float, float]) -> float | None:
    """The q-quantile of the observations between two readings of a histogram.

    Interpolated inside the bucket as Prometheus's ``histogram_quantile`` does; in the
    +Inf bucket, the highest finite bound.  None when nothing was observed.
    """
    bounds = sorted(now)
    reset = any(now[b] < before.get(b, 0.0) for b in bounds)
    counts = [now[b] - (0.0 if reset else before.get(b, 0.0)) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank and cumulative > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        if not math.isinf(bound):
            lower = bound
        below = cumulative
    return lower  # pragma: no cover - the +Inf bucket holds every observation


@dataclass(frozen=True)
class Row:
    """One pool over one interval, as the table shows it."""

    endpoint: str
    executor: str
    executor_type: str
    utilization: float | None
    running: float
    workers_max: float | None
    queued: float
    done_per_s: float
    failed_share: float | None
    wait_p50: float | None
    wait_p99: float | None
    duration_p50: float | None
    duration_p99: float | None
    oldest_queued: float
    oldest_running: float
    rejected: float
    stuck_after: float = 60.0

    @property
    def flags(self) -> list[str]:
        """What stands out: stuck, saturated, failing (most urgent first)."""
        out = []
        if self.oldest_running >= self.stuck_after:
            out.append("STUCK")
        if (self.utilization or 0.0) >= SATURATED or (
            self.workers_max and self.running >= self.workers_max and self.queued > 0
        ):
            out.append("SAT")
        if (self.failed_share or 0.0) >= FAILING:
            out.append("FAIL")
        return out


def rows(endpoint: str, now: Scrape, before: Scrape, stuck_after: float = 60.0) -> list[Row]:
    """The rows of one endpoint from two of its scrapes (``before`` the older)."""
    dt = max(now.at - before.at, 1e-9)
    out = []
    for (executor, executor_type), pool in sorted(now.pools.items()):
        old = before.pools.get((executor, executor_type), Pool())
        v, ov = pool.values, old.values
        workers_max = v.get(_WORKERS_MAX)
        busy = _delta(v.get(_BUSY, 0.0), ov.get(_BUSY, 0.0))
        completed = _delta(pool.completed, old.completed)
        failed = _delta(pool.failed, old.failed)
        finished = completed + failed
        out.append(
            Row(
                endpoint=endpoint,
                executor=executor,
                executor_type=executor_type,
                utilization=busy / (dt * workers_max) if workers_max else None,
                running=v.get(_RUNNING, 0.0),
                workers_max=workers_max,
                queued=v.get(_QUEUED, 0.0),
                done_per_s=finished / dt,
                failed_share=failed / finished if finished else None,
                wait_p50=quantile(0.5, pool.wait, old.wait),
                wait_p99=quantile(0.99, pool.wait, old.wait),
                duration_p50=quantile(0.5, pool.duration, old.duration),
                duration_p99=quantile(0.99, pool.duration, old.duration),
                oldest_queued=v.get(_OLDEST_QUEUED, 0.0),
                oldest_running=v.get(_OLDEST_RUNNING, 0.0),
                rejected=_delta(v.get(_REJECTED, 0.0), ov.get(_REJECTED, 0.0)),
                stuck_after=stuck_after,
            )
        )
    return out


# -- the table --------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.0f}m"


def _count(value: float) -> str:
    return f"{value:.0f}" if value < 1e5 else f"{value / 1e3:.0f}k"


def _bar(share: float | None, width: int = 5) -> str:
    if share is None:
        return "-".ljust(width + 5)
    filled = min(width, round(max(0.0, share) * width))
    return f"{min(share, 9.99) * 100:3.0f}% " + "#" * filled + "." * (width - filled)


@dataclass(frozen=True)
class Column:
    """A table column: header, width, how a row shows in it, and how it sorts."""

    header: str
    width: int
    show: Callable[[Row], str]
    #: Columns are dropped from the lowest priority up until the table fits.
    priority: int
    key: Callable[[Row], float] | None = None
    left: bool = False


def _name(row: Row, several: bool) -> str:
    kind = row.executor_type.rsplit(".", 1)[-1].replace("PoolExecutor", "")
    name = f"{row.executor or '(no id)'} {kind}".strip()
    return f"{row.endpoint} {name}" if several else name


COLUMNS: tuple[Column, ...] = (
    Column("UTIL", 10, lambda r: _bar(r.utilization), 9, lambda r: r.utilization or 0.0),
    Column(
        "RUN",
        7,
        lambda r: f"{r.running:.0f}/{'?' if r.workers_max is None else f'{r.workers_max:.0f}'}",
        8,
        lambda r: r.running,
    ),
    Column("QUEUED", 6, lambda r: _count(r.queued), 9, lambda r: r.queued),
    Column("DONE/s", 7, lambda r: f"{r.done_per_s:.1f}", 7, lambda r: r.done_per_s),
    Column(
        "FAIL%",
        5,
        lambda r: "-" if r.failed_share is None else f"{r.failed_share * 100:.0f}",
        7,
        lambda r: r.failed_share or 0.0,
    ),
    Column("WAITp50", 7, lambda r: _seconds(r.wait_p50), 3, lambda r: r.wait_p50 or 0.0),
    Column("WAITp99", 7, lambda r: _seconds(r.wait_p99), 6, lambda r: r.wait_p99 or 0.0),
    Column("DURp50", 6, lambda r: _seconds(r.duration_p50), 2, lambda r: r.duration_p50 or 0.0),
    Column("DURp99", 6, lambda r: _seconds(r.duration_p99), 5, lambda r: r.duration_p99 or 0.0),
    Column("OLDQ", 6, lambda r: _seconds(r.oldest_queued), 4, lambda r: r.oldest_queued),
    Column("OLDRUN", 6, lambda r: _seconds(r.oldest_running), 6, lambda r: r.oldest_running),
    Column("REJ", 4, lambda r: _count(r.rejected), 1, lambda r: r.rejected),
    Column("!", 9, lambda r: ",".join(r.flags), 8, lambda r: float(len(r.flags)), left=True),
)
#: The keys that sort the table, in the order the ``s`` key cycles through them.
SORTS = ("UTIL", "QUEUED", "DONE/s", "FAIL%", "WAITp99", "DURp99", "OLDRUN", "!")


def _fit(width: int, name_width: int) -> list[Column]:
    """The columns that fit ``width`` characters beside the name, most important kept."""
    kept = list(COLUMNS)
    while kept and name_width + sum(c.width + 1 for c in kept) > width:
        kept.remove(min(kept, key=lambda c: c.priority))
    return kept


@dataclass(frozen=True)
class Endpoint:
    """What one URL gave: its rows, or why it has none."""

    url: str
    rows: list[Row]
    error: str | None = None


def render(
    endpoints: Sequence[Endpoint],
    *,
    width: int = 80,
    height: int | None = None,
    sort: str = "UTIL",
    interval: float = 2.0,
    marks: tuple[str, str] = ("", ""),
) -> list[str]:
    """The frame as lines of at most ``width`` characters (and ``height`` lines).

    ``marks`` wraps the rows that stand out (an ANSI highlight in live mode).
    """
    several = len(endpoints) > 1
    all_rows = [row for e in endpoints for row in e.rows]
    names = [_name(r, several) for r in all_rows]
    name_width = min(max([len(n) for n in names] + [4]), max(12, width // 3))
    columns = _fit(width, name_width + 1)
    by = next((c for c in COLUMNS if c.header == sort), COLUMNS[0])
    order = sorted(
        range(len(all_rows)), key=lambda i: (-(by.key or (lambda r: 0.0))(all_rows[i]), names[i])
    )
    head = (
        f"executor-exporter top - {len(all_rows)} pools, {len(endpoints)} endpoint"
        f"{'s' if several else ''}, every {interval:g}s, sorted by {by.header}"
    )
    lines = [head[:width]]
    header = (
        "POOL".ljust(name_width)
        + " "
        + " ".join(c.header.ljust(c.width) if c.left else c.header.rjust(c.width) for c in columns)
    )
    lines.append(header.rstrip()[:width])
    body = []
    for i in order:
        row = all_rows[i]
        cells = [c.show(row)[: c.width] for c in columns]
        text = (
            names[i][:name_width].ljust(name_width)
            + " "
            + " ".join(
                cell.ljust(c.width) if c.left else cell.rjust(c.width)
                for cell, c in zip(cells, columns)
            )
        )
        text = text.rstrip()[:width]
        body.append(f"{marks[0]}{text}{marks[1]}" if row.flags else text)
    for e in endpoints:
        if e.error is not None:
            body.append(f"{e.url}: DOWN ({e.error})"[:width])
    if height is not None:
        room = max(1, height - len(lines) - 1)
        if len(body) > room:
            more = len(body) - room + 1
            body = [*body[: room - 1], f"... {more} more (a larger terminal shows them)"]
    lines += body
    return lines


# -- running it -------------------------------------------------------------------------


class _Watcher:
    """Keeps the last two scrapes of every URL."""

    def __init__(self, urls: Sequence[str], stuck_after: float) -> None:
        self.urls = list(urls)
        self.stuck_after = stuck_after
        self.last: dict[str, Scrape] = {}
        self.prev: dict[str, Scrape] = {}
        self.errors: dict[str, str] = {}

    def poll(self) -> None:
        for url in self.urls:
            try:
                got = scrape(url)
            except ScrapeError as exc:
                self.errors[url] = str(exc)
                continue
            self.errors.pop(url, None)
            if url in self.last:
                self.prev[url] = self.last[url]
            self.last[url] = got

    def endpoints(self) -> list[Endpoint]:
        out = []
        for url in self.urls:
            label = _label(url, self.urls)
            if url in self.errors:
                out.append(Endpoint(url, [], self.errors[url]))
            elif url in self.prev:
                out.append(
                    Endpoint(url, rows(label, self.last[url], self.prev[url], self.stuck_after))
                )
            elif url in self.last:  # one scrape so far: rates need two
                out.append(
                    Endpoint(url, rows(label, self.last[url], self.last[url], self.stuck_after))
                )
        return out


def _label(url: str, urls: Sequence[str]) -> str:
    """The short name of an endpoint in a row: host:port, or the URL if that is ambiguous."""
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    others = [u.split("://", 1)[-1].split("/", 1)[0] for u in urls if u != url]
    return url if hostport in others else hostport


def _once(watcher: _Watcher, interval: float, out: TextIO, err: TextIO) -> int:
    watcher.poll()
    if not watcher.errors:
        time.sleep(interval)
        watcher.poll()
    if watcher.errors:
        for url, why in watcher.errors.items():
            print(f"executor-exporter top: {url}: {why}", file=err)
        return 1
    width = shutil.get_terminal_size((80, 24)).columns
    for line in render(watcher.endpoints(), width=width, interval=interval):
        print(line, file=out)
    return 0


@contextmanager
def _terminal(out: TextIO) -> Iterator[Callable[[float], str]]:
    """Alternate screen, no cursor, keys without Enter; everything restored on exit.

    Yields ``read_key(timeout)``: a key pressed within ``timeout`` seconds, or "".
    """
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    out.write("\x1b[?1049h\x1b[?25l")
    out.flush()
    try:
        tty.setcbreak(fd)

        def read_key(timeout: float) -> str:
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
            return os.read(fd, 1).decode("utf-8", "replace") if ready else ""

        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


def _live(watcher: _Watcher, interval: float, out: TextIO) -> int:
    sort = 0
    with _terminal(out) as read_key:
        watcher.poll()  # the first frame at once; its rates need the next scrape
        next_poll = time.monotonic() + interval
        redraw = True
        while True:
            if time.monotonic() >= next_poll:
                watcher.poll()
                next_poll = time.monotonic() + interval
                redraw = True
            if redraw:
                size = shutil.get_terminal_size((80, 24))
                lines = render(
                    watcher.endpoints(),
                    width=size.columns,
                    height=size.lines - 1,
                    sort=SORTS[sort],
                    interval=interval,
                    marks=("\x1b[7m", "\x1b[0m"),
                )
                lines.append("q quit   s sort by the next column"[: size.columns])
                out.write("\x1b[H\x1b[2J" + "\r\n".join(lines))
                out.flush()
                redraw = False
            key = read_key(next_poll - time.monotonic())
            if key in ("q", "Q"):
                return 0
            if key in ("s", "S"):
                sort = (sort + 1) % len(SORTS)
                redraw = True  # the same scrapes, sorted anew


def run_top(
    urls: Sequence[str],
    interval: float = 2.0,
    once: bool = False,
    stuck_after: float = 60.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``top`` on ``urls``; return the exit code (0, or 1 when ``--once`` failed)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    watcher = _Watcher(urls or [DEFAULT_URL], stuck_after)
    if once:
        return _once(watcher, interval, out, err)
    if not (sys.stdin.isatty() and out.isatty()):
        print("executor-exporter top: live mode needs a terminal; use --once", file=err)
        return 2
    try:
        return _live(watcher, interval, out)
    except KeyboardInterrupt:
        return 0

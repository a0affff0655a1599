"""``executor-exporter top``: the arithmetic on canned expositions, ``--once`` against real
endpoints, and the live view in tmux against the demo."""

from __future__ import annotations

import http.server
import io
import math
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from executor_exporter import ThreadPoolExecutor
from executor_exporter.top import (
    Endpoint,
    Row,
    Scrape,
    ScrapeError,
    parse,
    quantile,
    render,
    rows,
    run_top,
)
from helpers import require_binary

CLI = [sys.executable, "-m", "executor_exporter"]
INF = math.inf
T = "concurrent.futures.thread.ThreadPoolExecutor"


def exposition(
    *,
    busy: float = 0.0,
    completed: float = 0.0,
    failed: float = 0.0,
    wait: tuple[float, float, float] = (0, 0, 0),
    running: float = 0,
    queued: float = 0,
    workers_max: float = 4,
    oldest_running: float = 0.0,
    rejected: float = 0,
    executor: str = "db",
) -> str:
    """A scrape's worth of text for one thread pool; ``wait`` = cumulative at 0.1, 1, +Inf."""
    labels = f'executor="{executor}",executor_type="{T}"'
    w1, w2, w3 = wait
    return f"""# HELP python_executor_busy_seconds_total busy
# TYPE python_executor_busy_seconds_total counter
python_executor_busy_seconds_total{{{labels}}} {busy}
# HELP python_executor_running_tasks_total running
# TYPE python_executor_running_tasks_total gauge
python_executor_running_tasks_total{{{labels}}} {running}
# HELP python_executor_queued_tasks queued
# TYPE python_executor_queued_tasks gauge
python_executor_queued_tasks{{{labels}}} {queued}
# HELP python_executor_workers_max max
# TYPE python_executor_workers_max gauge
python_executor_workers_max{{{labels}}} {workers_max}
# HELP python_executor_oldest_running_task_age_seconds age
# TYPE python_executor_oldest_running_task_age_seconds gauge
python_executor_oldest_running_task_age_seconds{{{labels}}} {oldest_running}
# HELP python_executor_rejected_tasks_total rejected
# TYPE python_executor_rejected_tasks_total counter
python_executor_rejected_tasks_total{{{labels},reason="shutdown"}} {rejected}
python_executor_rejected_tasks_total{{{labels},reason="broken"}} 0
# HELP python_executor_task_wait_seconds wait
# TYPE python_executor_task_wait_seconds histogram
python_executor_task_wait_seconds_bucket{{{labels},le="0.1"}} {w1}
python_executor_task_wait_seconds_bucket{{{labels},le="1.0"}} {w2}
python_executor_task_wait_seconds_bucket{{{labels},le="+Inf"}} {w3}
python_executor_task_wait_seconds_count{{{labels}}} {w3}
python_executor_task_wait_seconds_sum{{{labels}}} 0
# HELP python_executor_tasks_duration_seconds duration
# TYPE python_executor_tasks_duration_seconds histogram
python_executor_tasks_duration_seconds_bucket{{{labels},result="completed",le="0.1"}} {completed}
python_executor_tasks_duration_seconds_bucket{{{labels},result="completed",le="+Inf"}} {completed}
python_executor_tasks_duration_seconds_count{{{labels},result="completed"}} {completed}
python_executor_tasks_duration_seconds_sum{{{labels},result="completed"}} 0
python_executor_tasks_duration_seconds_bucket{{{labels},result="failed",le="0.1"}} 0
python_executor_tasks_duration_seconds_bucket{{{labels},result="failed",le="+Inf"}} {failed}
python_executor_tasks_duration_seconds_count{{{labels},result="failed"}} {failed}
python_executor_tasks_duration_seconds_sum{{{labels},result="failed"}} 0
"""


def one_row(before: str, now: str, dt: float = 2.0) -> Row:
    (row,) = rows("host:1", parse(now, at=10.0 + dt), parse(before, at=10.0))
    return row


# -- parsing and arithmetic --------------------------------------------------------------


def test_parse_sums_labels_it_does_not_show() -> None:
    scrape = parse(exposition(completed=5, failed=2, rejected=3))
    pool = scrape.pools[("db", T)]
    assert (pool.completed, pool.failed) == (5, 2)
    assert pool.duration == {0.1: 5, INF: 7}  # both results add up
    assert pool.values["python_executor_rejected_tasks_total"] == 3  # both reasons


@pytest.mark.parametrize(
    "text", ["<html>hello</html>", "# TYPE x counter\nx 1\n", "x{a=1} 2\n", ""]
)
def test_parse_refuses_what_is_not_executor_metrics(text: str) -> None:
    with pytest.raises(ScrapeError):
        parse(text)


def test_quantile_interpolates_in_the_bucket_like_prometheus() -> None:
    before = {0.1: 10.0, 1.0: 10.0, INF: 10.0}
    now = {0.1: 10.0, 1.0: 110.0, INF: 110.0}  # 100 new observations, all in (0.1, 1]
    assert quantile(0.5, now, before) == pytest.approx(0.55)
    assert quantile(0.99, now, before) == pytest.approx(0.1 + 0.9 * 0.99)


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    now = {0.1: 0.0, 1.0: 0.0, INF: 4.0}
    assert quantile(0.5, now, {}) == 1.0


def test_quantile_of_nothing_observed_is_none() -> None:
    same = {0.1: 3.0, INF: 3.0}
    assert quantile(0.5, same, same) is None


def test_quantile_after_a_reset_counts_from_zero() -> None:
    before = {0.1: 50.0, 1.0: 90.0, INF: 100.0}
    now = {0.1: 4.0, 1.0: 4.0, INF: 4.0}  # the process restarted
    assert quantile(0.5, now, before) == pytest.approx(0.05)


def test_rates_over_the_interval() -> None:
    row = one_row(
        exposition(busy=10.0, completed=100, failed=0, wait=(100, 100, 100)),
        exposition(busy=16.0, completed=190, failed=10, wait=(150, 200, 200), running=3),
        dt=2.0,
    )
    assert row.utilization == pytest.approx(6.0 / (2.0 * 4))
    assert row.done_per_s == pytest.approx(50.0)
    assert row.failed_share == pytest.approx(0.1)
    assert row.wait_p50 == pytest.approx(0.1)  # 50 of the 100 new waits are under 0.1 s
    assert (row.running, row.workers_max) == (3, 4)


def test_a_counter_reset_is_a_restart_not_a_negative_rate() -> None:
    row = one_row(
        exposition(busy=500.0, completed=1000, rejected=9),
        exposition(busy=1.0, completed=20, rejected=1),
        dt=2.0,
    )
    assert row.done_per_s == pytest.approx(10.0)
    assert row.utilization == pytest.approx(1.0 / 8)
    assert row.rejected == 1


def test_a_pool_new_since_the_last_scrape_counts_from_zero() -> None:
    now = parse(exposition(completed=6, executor="new") + exposition(executor="db"), at=3.0)
    before = parse(exposition(executor="db"), at=1.0)
    by_name = {r.executor: r for r in rows("h", now, before)}
    assert by_name["new"].done_per_s == pytest.approx(3.0)
    assert by_name["db"].done_per_s == 0.0


@pytest.mark.parametrize(
    ("now", "flags"),
    [
        (exposition(busy=2.0, completed=10), []),
        (exposition(busy=7.6, completed=10), ["SAT"]),  # 95% of 4 workers over 2 s
        (exposition(completed=10, running=4, queued=3), ["SAT"]),  # all busy, some wait
        (exposition(completed=9, failed=1), ["FAIL"]),
        (exposition(oldest_running=61.0, running=1), ["STUCK"]),
    ],
)
def test_what_stands_out(now: str, flags: list[str]) -> None:
    assert one_row(exposition(), now).flags == flags


# -- the table ----------------------------------------------------------------------------


def _endpoints(n: int = 3) -> list[Endpoint]:
    before = parse(exposition(), at=0.0)
    out = []
    for i in range(n):
        now = parse(exposition(busy=2.0 * i, completed=10 * i, oldest_running=99.0 * i), at=2.0)
        out.append(Endpoint(f"http://h{i}:9464/metrics", rows(f"h{i}:9464", now, before)))
    return out


def test_the_frame_fits_80_columns_dropping_columns_not_wrapping() -> None:
    lines = render(_endpoints(), width=80)
    assert all(len(line) <= 80 for line in lines)
    assert "UTIL" in lines[1] and "QUEUED" in lines[1] and "RUN" in lines[1]
    wide = render(_endpoints(), width=200)
    assert len(wide[1].split()) > len(lines[1].split())  # more columns with more room


def test_several_endpoints_name_the_one_each_row_came_from() -> None:
    lines = render(_endpoints(), width=120)
    assert [line.split()[0] for line in lines[2:]] == ["h2:9464", "h1:9464", "h0:9464"]
    assert "STUCK" in lines[2]  # 198 s running: sorted first by utilization, and flagged


def test_a_short_terminal_says_how_many_rows_it_hides() -> None:
    lines = render(_endpoints(10), width=80, height=8)
    assert len(lines) <= 8
    assert lines[-1].startswith("... ")


def test_a_down_endpoint_is_shown_as_such() -> None:
    lines = render([*_endpoints(1), Endpoint("http://x:1/metrics", [], "refused")])
    assert lines[-1] == "http://x:1/metrics: DOWN (refused)"


def test_sorting_by_another_column() -> None:
    before = parse(exposition(executor="a") + exposition(executor="b"), at=0.0)
    now = parse(exposition(executor="a", busy=4.0) + exposition(executor="b", queued=50), at=2.0)
    endpoint = [Endpoint("u", rows("h", now, before))]
    assert render(endpoint, sort="UTIL")[2].startswith("a ")
    assert render(endpoint, sort="QUEUED")[2].startswith("b ")


# -- --once against real endpoints -------------------------------------------------------


class _Server:
    """A tiny HTTP server answering every GET with a fixed body, or a live registry."""

    def __init__(self, body: bytes | None = None, registry: CollectorRegistry | None = None):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = generate_latest(registry) if registry is not None else outer.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.body = body or b""
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pool_server() -> Iterator[_Server]:
    registry = CollectorRegistry()
    pool = ThreadPoolExecutor(2, executor_id="busy", registry=registry)
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            pool.submit(time.sleep, 0.01).result()

    feeder = threading.Thread(target=feed)
    feeder.start()
    server = _Server(registry=registry)
    yield server
    stop.set()
    feeder.join()
    pool.shutdown()
    server.close()


def test_once_prints_one_frame_and_exits_0(pool_server: _Server) -> None:
    result = subprocess.run(
        [*CLI, "top", "--once", "--interval", "0.5", pool_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("executor-exporter top - 1 pools, 1 endpoint")
    (row,) = [line for line in lines if line.startswith("busy Thread")]
    done_per_s = float(row.split()[6])  # POOL is two words; UTIL two more; then RUN, QUEUED
    assert 10 < done_per_s < 200  # one feeder, ~10 ms tasks: about 100 per second


def test_once_against_a_closed_port_is_one_line_and_exit_1() -> None:
    server = _Server(b"")
    url = server.url
    server.close()
    result = subprocess.run([*CLI, "top", "--once", url], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"executor-exporter top: {url}: ")


@pytest.mark.parametrize("url", ["localhost", "http://[::1/metrics"])
def test_once_with_a_malformed_url_is_one_line_and_exit_1(url: str) -> None:
    result = subprocess.run([*CLI, "top", "--once", url], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"executor-exporter top: {url}: ")


def test_once_against_something_else_is_one_line_and_exit_1() -> None:
    server = _Server(b"<html><body>not metrics</body></html>")
    try:
        out = subprocess.run(
            [*CLI, "top", "--once", "--interval", "0.1", server.url],
            capture_output=True,
            text=True,
        )
    finally:
        server.close()
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_live_mode_without_a_terminal_says_to_use_once() -> None:
    assert run_top(["http://127.0.0.1:1/metrics"]) == 2


def test_scrape_helpers_are_public_for_scripts() -> None:
    assert isinstance(parse(exposition()), Scrape)


def test_once_in_process_writes_the_frame_to_out(pool_server: _Server) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_top([pool_server.url], interval=0.2, once=True, out=out, err=err) == 0
    assert err.getvalue() == ""
    assert out.getvalue().startswith("executor-exporter top - 1 pools, 1 endpoint")
    assert "\nbusy Thread" in out.getvalue()


def test_once_in_process_names_each_endpoint_that_failed() -> None:
    down = _Server(b"")
    down.close()
    other = _Server(b"not metrics")
    try:
        out, err = io.StringIO(), io.StringIO()
        assert run_top([down.url, other.url], once=True, out=out, err=err) == 1
    finally:
        other.close()
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert [line.split(": ")[1] for line in lines] == [down.url, other.url]


# -- live mode, in a pseudo-terminal of this process -------------------------------------


class _Pty:
    """A pseudo-terminal whose output a thread keeps reading (a full pty would block)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.stdin = os.fdopen(self.slave, "r", closefd=False)
        self.out = os.fdopen(os.dup(self.slave), "w")
        self.screen = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the slave side closed
                return
            if not data:
                return
            self.screen += data

    def wait_for(self, text: bytes, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.screen.count(text) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.screen.count(text) >= count, bytes(self.screen)

    def close(self) -> None:
        self.out.close()
        self.stdin.close()
        os.close(self.slave)
        self._reader.join(timeout=5)
        os.close(self.master)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Pty]:
    term = _Pty()
    monkeypatch.setattr(sys, "stdin", term.stdin)
    yield term
    term.close()


def _run_live(url: str, term: _Pty, keys: Callable[[], None]) -> tuple[int, list[Any]]:
    before = termios.tcgetattr(term.slave)
    driver = threading.Thread(target=keys)
    driver.start()
    try:
        code = run_top([url], interval=0.2, out=term.out)
    finally:
        driver.join()
    return code, [before, termios.tcgetattr(term.slave)]


@pytest.mark.terminal
def test_live_mode_redraws_sorts_on_s_quits_on_q_and_restores_the_terminal(
    pool_server: _Server, terminal: _Pty
) -> None:
    def keys() -> None:
        terminal.wait_for(b"sorted by UTIL", count=2)  # a redraw after the next scrape
        os.write(terminal.master, b"s")
        terminal.wait_for(b"sorted by QUEUED")
        os.write(terminal.master, b"q")

    code, (before, after) = _run_live(pool_server.url, terminal, keys)
    assert code == 0
    assert after == before  # cbreak undone
    terminal.wait_for(b"\x1b[?1049l")  # the alternate screen left, the cursor shown again
    screen = bytes(terminal.screen)
    assert screen.index(b"\x1b[?1049h") < screen.index(b"busy Thread")
    assert screen.rindex(b"busy Thread") < screen.rindex(b"\x1b[?25h\x1b[?1049l")
    assert b"q quit" in screen


@pytest.mark.terminal
def test_live_mode_ends_cleanly_on_ctrl_c(pool_server: _Server, terminal: _Pty) -> None:
    main = threading.get_ident()

    def keys() -> None:
        terminal.wait_for(b"busy Thread")
        signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C delivers to the process

    code, (before, after) = _run_live(pool_server.url, terminal, keys)
    assert code == 0
    assert after == before


@pytest.mark.terminal
def test_live_mode_shows_a_down_endpoint_and_keeps_retrying(terminal: _Pty) -> None:
    down = _Server(b"")
    down.close()

    def keys() -> None:
        terminal.wait_for(b"q quit", count=3)  # three frames: it polled again, no exit
        os.write(terminal.master, b"q")

    code, _ = _run_live(down.url, terminal, keys)
    assert code == 0
    assert b"Connection refused" in terminal.screen


# -- the real thing, in tmux -------------------------------------------------------------


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


@pytest.mark.terminal
def test_live_view_of_the_demo_in_tmux(tmp_path: Path) -> None:
    require_binary("tmux", package="tmux")
    demo = subprocess.Popen(
        [*CLI, "demo", "--port", "0", "--duration", "60", "--interval", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    session = f"ee-top-{tmp_path.name}"
    try:
        assert demo.stdout is not None
        url = None
        for line in demo.stdout:
            match = re.search(r"serving metrics at (http://\S+/metrics)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the demo did not say where it serves"
        done = tmp_path / "exit-code"
        command = f"{shlex.join([*CLI, 'top', '--interval', '1', url])}; echo $? > {done}"
        _tmux("-L", session, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command)
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = _tmux("-L", session, "capture-pane", "-p", "-t", session)
            if "api" in screen and "reports" in screen and "DONE/s" in screen:
                time.sleep(2.5)  # two scrapes more: rates over a full interval
                screen = _tmux("-L", session, "capture-pane", "-p", "-t", session)
                break
        assert "executor-exporter top - " in screen, screen
        lines = screen.splitlines()
        assert all(len(line) <= 80 for line in lines), screen
        api = next(line for line in lines if line.lstrip("\x1b[7m").startswith("api "))
        assert float(api.split()[6]) > 0, screen  # the api pool completes tasks
        assert "q quit" in screen
        _tmux("-L", session, "send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", session, "kill-server"], capture_output=True)
        demo.terminate()
        demo.wait(timeout=30)

"""The demo and the command line, run the way a user runs them: in a subprocess."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import executor_exporter
from executor_exporter import HistogramStats, ThreadPoolExecutor
from executor_exporter.__main__ import main
from executor_exporter.demo import summary_line
from executor_exporter.metrics import markdown_table

CLI = [sys.executable, "-m", "executor_exporter"]
URL = re.compile(r"serving metrics at (http://\S+/metrics)")
SUMMARY = re.compile(
    r"^\s*(?P<name>\w+)\s+submitted=(?P<submitted>\d+)\s+queued=(?P<queued>\d+)\s+"
    r"running=(?P<running>\d+)\s+completed=(?P<completed>\d+)\s+failed=(?P<failed>\d+)\s+"
    r"cancelled=(?P<cancelled>\d+)\s"
)
EXECUTORS = ["api", "reports"] + (
    ["render"] if hasattr(executor_exporter, "ProcessPoolExecutor") else []
)


class Demo:
    """``executor-exporter demo --port 0 ...`` in a subprocess, its output read as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "demo", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Return the match of the first output line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if match := pattern.search(line):
                return match
        pytest.fail(f"no line matching {pattern.pattern!r} in:\n{self.output}")

    def finish(self, timeout: float) -> int:
        """Wait for the exit; return the exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def demo() -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        started.append(Demo(*args))
        return started[-1]

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, executor: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name
        and s.labels.get("executor") == executor
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


def final_summary(output: str) -> dict[str, dict[str, int]]:
    """The numbers of the final summary, by executor."""
    assert "final summary" in output, output
    tail = output.split("final summary", 1)[1]
    rows = {}
    for line in tail.splitlines()[1:]:
        if match := SUMMARY.match(line):
            fields = match.groupdict()
            name = fields.pop("name")
            rows[name] = {k: int(v) for k, v in fields.items()}
    return rows


def test_demo_serves_metrics_and_stops_by_itself(demo: Callable[..., Demo]) -> None:
    d = demo("--duration", "4", "--interval", "1")
    url = d.wait_for(URL).group(1)
    assert not url.endswith(":0/metrics"), "the real bound port is printed"
    time.sleep(3.0)
    samples = scrape(url)
    failed = 0.0
    for executor in EXECUTORS:
        assert value(samples, "python_executor_submitted_tasks_total", executor) > 0, executor
        failed += value(
            samples, "python_executor_tasks_duration_seconds_count", executor, result="failed"
        )
    assert failed > 0

    assert d.finish(timeout=15) == 0, d.output
    assert "Traceback" not in d.output
    for executor in EXECUTORS:
        live = [line for line in d.lines if line.startswith("[") and f"] {executor} " in line]
        assert len(live) >= 3, d.output
        assert "util=" in live[-1] and "mean_wait=" in live[-1]
    # After shutdown the books balance: nothing left queued or running.
    rows = final_summary(d.output)
    assert sorted(rows) == sorted(EXECUTORS)
    for executor, n in rows.items():
        assert n["queued"] == n["running"] == 0, (executor, n)
        assert n["submitted"] == n["completed"] + n["failed"] + n["cancelled"], (executor, n)


def test_sigint_exits_cleanly_with_a_final_summary(demo: Callable[..., Demo]) -> None:
    d = demo("--interval", "1")
    d.wait_for(URL)
    time.sleep(2.0)
    d.proc.send_signal(signal.SIGINT)
    assert d.finish(timeout=10) == 0, d.output
    assert "interrupted" in d.output
    assert sorted(final_summary(d.output)) == sorted(EXECUTORS)
    assert "Traceback" not in d.output


def test_table_prints_the_readme_table() -> None:
    result = subprocess.run([*CLI, "table"], capture_output=True, text=True, check=True)
    assert result.stdout == markdown_table()


def test_help() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: executor-exporter")
    assert "demo" in result.stdout and "table" in result.stdout


def test_version_is_the_installed_distribution_s() -> None:
    installed = importlib.metadata.version("executor-exporter")
    assert executor_exporter.__version__ == installed
    result = subprocess.run([*CLI, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"executor-exporter {installed}\n"


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: executor-exporter")


def test_demo_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--duration", "--interval"):
        assert option in out


@pytest.mark.parametrize("args", [["--port", "70000"], ["--duration", "0"], ["--interval", "x"]])
def test_demo_rejects_bad_arguments(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2


def test_importing_starts_nothing() -> None:
    code = (
        "import threading, executor_exporter.demo, executor_exporter.__main__;"
        "print(threading.active_count())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "1", result.stderr


def test_summary_line_mean_wait_and_utilization() -> None:
    pool = ThreadPoolExecutor(2, executor_id="summary", registry=CollectorRegistry())
    try:
        zero = pool.stats()
    finally:
        pool.shutdown()
    before = dataclasses.replace(zero, busy_seconds=1.0, wait=HistogramStats((), (10,), 0.5))
    now = dataclasses.replace(
        zero, submitted=30, busy_seconds=4.0, wait=HistogramStats((), (30,), 1.5)
    )
    line = summary_line("summary", now, before, 2.0, 2)
    assert line.startswith("summary  submitted=30 ")
    assert "mean_wait=   50.0ms" in line  # (1.5 - 0.5) / (30 - 10)
    assert line.endswith("util= 75%")  # (4.0 - 1.0) / (2.0 * 2)
    assert "mean_wait=      -" in summary_line("summary", zero, zero, 2.0, 2)


def test_demo_in_process_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    """The same run inside this process (so that coverage sees the demo's code)."""
    assert main(["demo", "--port", "0", "--duration", "2.5", "--interval", "0.5"]) == 0
    out = capsys.readouterr().out
    assert URL.search(out)
    final = final_summary(out)
    assert sorted(final) == sorted(EXECUTORS)
    assert all(int(row["submitted"]) > 0 for row in final.values())
    assert all(int(row["queued"]) == int(row["running"]) == 0 for row in final.values())


def test_table_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table"]) == 0
    assert capsys.readouterr().out == markdown_table()

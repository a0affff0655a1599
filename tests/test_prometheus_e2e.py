"""End to end against a real Prometheus: the demo is scraped every second, the mixin's
rules are evaluated, and every query of the dashboard is run.

Needs Debian's ``prometheus`` package (the ``prometheus`` and ``promtool`` binaries).
Without it these tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import executor_exporter
from executor_exporter import METRICS
from helpers import require_binary
from test_monitoring import (
    MONITORING,
    RULE_FILES,
    load_dashboard,
    panel_targets,
    recording_rule_names,
    rule_entries,
)

JOB = "executor-demo"
EXECUTORS = ["api", "reports"] + (
    ["render"] if hasattr(executor_exporter, "ProcessPoolExecutor") else []
)
WORKERS_MAX = {"api": 8, "reports": 2, "render": 2}
URL = re.compile(r"serving metrics at (http://\S+/metrics)")
#: What the dashboard's variables and Grafana's interval become in these queries.
SUBSTITUTIONS = {"$executor": ".*", "$job": JOB, "$__rate_interval": "30s"}
#: The one complaint of `promtool check metrics`: the name is frozen by the original spec.
EXPECTED_LINT = (
    'python_executor_running_tasks_total non-counter metrics should not have "_total" suffix'
)
STARTUP_TIMEOUT = 20.0
DATA_TIMEOUT = 20.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never Prometheus's default 9090."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 9090:
            return port


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- {path.name} (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """The demo and a Prometheus scraping it, both subprocesses of this test module."""

    tmp: Path
    prometheus_bin: str
    promtool_bin: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    demo_url: str = ""
    prometheus_url: str = ""

    @property
    def demo_log(self) -> Path:
        return self.tmp / "demo.log"

    @property
    def prometheus_log(self) -> Path:
        return self.tmp / "prometheus.log"

    def logs(self) -> str:
        return tail(self.demo_log) + "\n" + tail(self.prometheus_log)

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_demo(self) -> None:
        demo = self.spawn(
            [
                sys.executable,
                "-m",
                "executor_exporter",
                "demo",
                "--port",
                "0",
                "--duration",
                "40",
                "--interval",
                "5",
            ],
            self.demo_log,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if match := URL.search(self.demo_log.read_text(errors="replace")):
                self.demo_url = match.group(1)
                return
            if demo.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"the demo did not start serving\n{self.logs()}")

    def start_prometheus(self) -> None:
        target = urllib.parse.urlsplit(self.demo_url).netloc
        config = self.tmp / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            + "".join(f"  - {json.dumps(str(path))}\n" for path in RULE_FILES)
            + "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{port}"
        prometheus = self.spawn(
            [
                self.prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            self.prometheus_log,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if prometheus.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        pytest.fail(f"prometheus did not get ready\n{self.logs()}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- the HTTP API ---------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{url}: {exc.code} {exc.read().decode(errors='replace')}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def eventually(
        self, expr: str, ok: Callable[[list[dict[str, Any]]], bool], timeout: float = DATA_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``ok(result)``; fail with the last result after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{expr}: still {result} after {timeout}s\n{self.logs()}")
            time.sleep(0.5)


def by_executor(result: list[dict[str, Any]]) -> dict[str, float]:
    return {sample["metric"].get("executor", ""): float(sample["value"][1]) for sample in result}


def has_all_executors(result: list[dict[str, Any]]) -> bool:
    return set(EXECUTORS) <= {sample["metric"].get("executor") for sample in result}


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("prometheus-e2e"),
        require_binary("prometheus"),
        require_binary("promtool"),
    )
    try:
        s.start_demo()
        s.start_prometheus()
        # The first scrapes landed: every executor is there (a few scrapes, for rate()).
        s.eventually(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 3', bool)
        s.eventually("python_executor_submitted_tasks_total", has_all_executors)
        yield s
    finally:
        s.stop()


def test_the_target_is_up(stack: Stack) -> None:
    (sample,) = stack.query(f'up{{job="{JOB}"}}')
    assert sample["value"][1] == "1"


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_every_family_arrives_for_every_executor(stack: Stack, metric: Any) -> None:
    names = [metric.name]
    if metric.type == "histogram":
        names = [f"{metric.name}{suffix}" for suffix in ("_bucket", "_count", "_sum")]
    for name in names:
        result = stack.eventually(name, has_all_executors)
        for sample in result:
            labels = sample["metric"]
            assert labels["job"] == JOB, labels
            assert set(metric.labels) <= set(labels), (name, labels)
            assert labels["executor_type"].startswith("concurrent.futures."), labels
            assert math.isfinite(float(sample["value"][1])), sample
    if metric.name == "python_executor_rejected_tasks_total":
        reasons = {s["metric"]["reason"] for s in stack.query(metric.name)}
        assert reasons == {"shutdown", "broken"}


def test_submissions_increase(stack: Stack) -> None:
    result = stack.eventually(
        "increase(python_executor_submitted_tasks_total[30s]) > 0", has_all_executors
    )
    assert all(v > 0 for v in by_executor(result).values())


def test_wait_quantile_is_a_number(stack: Stack) -> None:
    expr = (
        "histogram_quantile(0.5, sum by (executor, le) "
        "(rate(python_executor_task_wait_seconds_bucket[30s])))"
    )
    result = stack.eventually(
        expr, lambda r: any(math.isfinite(v) for v in by_executor(r).values())
    )
    quantiles = by_executor(result)
    assert math.isfinite(quantiles["api"]), quantiles
    assert all(v >= 0 for v in quantiles.values() if math.isfinite(v)), quantiles


def test_gauges_have_sensible_values(stack: Stack) -> None:
    workers_max = by_executor(stack.query("python_executor_workers_max"))
    assert workers_max == {e: float(WORKERS_MAX[e]) for e in EXECUTORS}
    workers = by_executor(stack.query("python_executor_workers"))
    running = by_executor(stack.query("python_executor_running_tasks_total"))
    for executor in EXECUTORS:
        assert 0 < workers[executor] <= workers_max[executor], workers
        assert 0 <= running[executor] <= workers_max[executor], running
    for gauge in (
        "python_executor_queued_tasks",
        "python_executor_oldest_queued_task_age_seconds",
        "python_executor_oldest_running_task_age_seconds",
    ):
        values = by_executor(stack.query(gauge))
        assert sorted(values) == sorted(EXECUTORS), (gauge, values)
        assert all(math.isfinite(v) and v >= 0 for v in values.values()), (gauge, values)


def test_recording_rules_produce_series(stack: Stack) -> None:
    names = recording_rule_names()
    assert names
    for name in sorted(names):
        # The failure ratio exists for pools that finished a task in the last 5 minutes:
        # all of them, soon enough; utilization needs a known workers_max: all here too.
        result = stack.eventually(name, has_all_executors)
        for sample in result:
            assert sample["metric"]["job"] == JOB, sample
            value = float(sample["value"][1])
            assert not math.isinf(value), (name, sample)
            if name.endswith(":ratio_rate5m"):
                assert 0 <= value <= 1.0 + 1e-9, (name, sample)


def test_rules_are_loaded_and_healthy(stack: Stack) -> None:
    expected = {
        "recording": set(recording_rule_names()),
        "alerting": set(rule_entries(MONITORING / "alerting_rules.yml", "alert")),
    }
    deadline = time.monotonic() + DATA_TIMEOUT
    while True:
        rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
        if all(r["lastEvaluation"] > "2000" for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    loaded = {
        "recording": {r["name"] for r in rules if r["type"] == "recording"},
        "alerting": {r["name"] for r in rules if r["type"] == "alerting"},
    }
    assert loaded == expected
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    # A healthy demo sets nothing off (the for-less broken-pool alert included).
    assert stack.query('ALERTS{alertstate="firing"}') == []


def test_dashboard_variable_finds_the_executors(stack: Stack) -> None:
    values = stack.api(
        "label/executor/values", **{"match[]": "python_executor_submitted_tasks_total"}
    )
    assert set(EXECUTORS) <= set(values)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    targets = panel_targets(load_dashboard())
    assert len(targets) >= 9
    for title, target in targets:
        expr = substitute(target["expr"])
        assert "$" not in expr, (title, expr)
        result = stack.eventually(expr, bool)
        legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"])
        for sample in result:
            missing = [label for label in legend_labels if label not in sample["metric"]]
            assert not missing, (title, target["refId"], missing, sample)


def test_promtool_check_metrics_on_the_live_exposition(stack: Stack) -> None:
    with urllib.request.urlopen(stack.demo_url, timeout=10) as response:
        text = response.read()
    assert b"python_executor_submitted_tasks_total" in text
    result = subprocess.run(
        [stack.promtool_bin, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    complaints = [line.strip() for line in output.splitlines() if line.strip()]
    assert complaints == [EXPECTED_LINT], output
    assert result.returncode == 3, output  # promtool's exit code for lint problems


@pytest.mark.slow
def test_plot_dashboard_script_draws_the_panels(stack: Stack, tmp_path: Path) -> None:
    """scripts/plot_dashboard.py against this Prometheus (where matplotlib is installed:
    it is no dependency of the library; drawing takes 5-15 s, hence slow)."""
    pytest.importorskip("matplotlib")
    output = tmp_path / "dashboard.png"
    script = Path(__file__).resolve().parents[1] / "scripts" / "plot_dashboard.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            stack.prometheus_url,
            "--minutes",
            "1",
            "--job",
            JOB,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no data" not in result.stdout, result.stdout
    assert output.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

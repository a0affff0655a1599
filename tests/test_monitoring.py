"""The monitoring mixin (monitoring/): rules checked and unit-tested by promtool, and a
Grafana dashboard whose queries name only metrics that the library exports.

promtool comes with Debian's ``prometheus`` package; without it these tests skip, except
under ``CI=true`` where a missing promtool fails them (.ci/run installs it).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from executor_exporter import METRICS
from helpers import require_binary

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULE_FILES = [MONITORING / "recording_rules.yml", MONITORING / "alerting_rules.yml"]
DASHBOARD = MONITORING / "dashboard.json"

#: The dashboard's panels, in order.
PANELS = [
    "Utilization",
    "Queued and running tasks",
    "Queue wait p50 / p99",
    "Task duration p50 / p99",
    "Throughput by result",
    "Failure ratio",
    "Oldest queued / running task age",
    "Workers vs workers_max",
    "Cancelled and rejected tasks",
]

ALERTS = [
    "ExecutorSaturated",
    "ExecutorBacklogGrowing",
    "ExecutorTaskFailureRatioHigh",
    "ExecutorTaskStuck",
    "ExecutorHeadOfLineBlocking",
    "ExecutorPoolBroken",
    "ExecutorRejectingTasksAfterShutdown",
]


# -- helpers, also used by test_prometheus_e2e.py ----------------------------------------


def exported_names() -> set[str]:
    """Every series name the library exposes (a histogram's _bucket, _count and _sum)."""
    names: set[str] = set()
    for m in METRICS:
        if m.type == "histogram":
            names.update(f"{m.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(m.name)
    return names


def rule_entries(path: Path, kind: str) -> dict[str, str]:
    """``{name: expr}`` of the rules of ``kind`` ("record" or "alert") in a rule file.

    A small reader for the layout of our own files (``- record:``/``- alert:`` followed by
    ``expr:``, inline or as a block scalar), so that no YAML library is needed.
    """
    entries: dict[str, str] = {}
    lines = path.read_text().splitlines()
    name: str | None = None
    for i, line in enumerate(lines):
        if match := re.match(r"\s*- (record|alert):\s*(\S+)\s*$", line):
            name = match.group(2) if match.group(1) == kind else None
            continue
        match = re.match(r"(\s*)expr:\s*(.*)$", line)
        if match is None or name is None:
            continue
        indent, rest = len(match.group(1)), match.group(2).strip()
        if rest and rest[0] not in "|>":
            entries[name] = rest
            continue
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        entries[name] = "\n".join(block).strip()
    return entries


def recording_rule_names() -> set[str]:
    return set(rule_entries(MONITORING / "recording_rules.yml", "record"))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names that a PromQL expression selects (not functions or label names)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(panel title, target)`` for every query target of every panel."""
    return [
        (panel["title"], target)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


# -- promtool -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (MONITORING / "tests").glob("*.yml"))
    assert len(files) >= 2, files
    result = subprocess.run(
        [promtool, "test", "rules", *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(files), output
    assert "FAILED" not in output, output


# -- the rule files -----------------------------------------------------------------------


def test_the_expected_alerts_are_defined() -> None:
    assert list(rule_entries(MONITORING / "alerting_rules.yml", "alert")) == ALERTS


def test_rules_select_only_exported_metrics_or_recorded_series() -> None:
    known = exported_names() | recording_rule_names()
    for path in RULE_FILES:
        for kind in ("record", "alert"):
            for name, expr in rule_entries(path, kind).items():
                assert expr, (path.name, name)
                used = metric_names(expr)
                assert used, (path.name, name, expr)
                assert used <= known, (path.name, name, sorted(used - known))


def test_recording_rule_names_follow_the_convention() -> None:
    names = recording_rule_names()
    assert len(names) == 6, names
    for name in names:
        level, metric, operations = name.split(":")
        assert level == "executor", name
        assert metric.startswith("python_executor_"), name
        assert operations, name


def test_every_alert_has_severity_and_annotations() -> None:
    text = (MONITORING / "alerting_rules.yml").read_text()
    blocks = re.split(r"\n\s*- alert: ", text)[1:]
    assert len(blocks) == len(ALERTS)
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"severity: (warning|critical)\b", block), name
        assert "summary:" in block and "description:" in block, name
        assert "{{ $labels.executor }}" in block, name


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    text = (MONITORING / "tests" / "alerting_rules_test.yml").read_text()
    cases = re.findall(r"- alertname: (\w+)\s+eval_time: \S+[^\n]*\s+exp_alerts:(\s*\[\])?", text)
    for alert in ALERTS:
        outcomes = [bool(silent) for name, silent in cases if name == alert]
        assert False in outcomes, f"{alert}: no test where it fires"
        assert True in outcomes, f"{alert}: no test where it does not fire"
    assert {name for name, _ in cases} == set(ALERTS)


def test_every_recording_rule_is_unit_tested() -> None:
    text = (MONITORING / "tests" / "recording_rules_test.yml").read_text()
    tested = set(re.findall(r"- expr: (\S+)", text))
    assert recording_rule_names() <= tested


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_is_valid_json_with_the_expected_panels() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    assert [panel["title"] for panel in dashboard["panels"]] == PANELS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        assert panel["type"] == "timeseries", panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert "{{executor}}" in target["legendFormat"], (panel["title"], target)
            assert 'executor=~"$executor"' in target["expr"], (panel["title"], target)


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[x, y] = panel["title"]


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    executor = variables["executor"]
    assert executor["type"] == "query"
    assert executor["datasource"]["uid"] == "${datasource}"
    query = executor["query"]["query"]
    assert re.fullmatch(
        r"label_values\(python_executor_submitted_tasks_total(\{[^}]*\})?, executor\)", query
    ), query
    assert executor["multi"] and executor["includeAll"] and executor["allValue"] == ".*"


def test_dashboard_queries_use_only_exported_metrics_or_recorded_series() -> None:
    known = exported_names() | recording_rule_names()
    used: set[str] = set()
    for title, target in panel_targets(load_dashboard()):
        names = metric_names(target["expr"])
        assert names, (title, target["expr"])
        assert names <= known, (title, sorted(names - known))
        used |= names
    # Every family a panel is promised to show is there.
    for family in (
        "python_executor_busy_seconds_total",
        "python_executor_workers_max",
        "python_executor_workers",
        "python_executor_queued_tasks",
        "python_executor_running_tasks_total",
        "python_executor_task_wait_seconds_bucket",
        "python_executor_tasks_duration_seconds_count",
        "python_executor_submitted_tasks_total",
        "python_executor_oldest_queued_task_age_seconds",
        "python_executor_oldest_running_task_age_seconds",
        "python_executor_cancelled_tasks_total",
        "python_executor_rejected_tasks_total",
    ):
        assert family in used, family


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (executor, le) (rate(a_bucket{x=~"b|c", le!="0.1"}[$__rate_interval]))',
            {"a_bucket"},
        ),
        (
            "histogram_quantile(0.99, x:y:rate5m) > 1e3 and on (job) z offset 5m",
            {"x:y:rate5m", "z"},
        ),
        ("rate(a[5m]) / (b > 0) unless ignoring(le) c", {"a", "b", "c"}),
    ],
)
def test_metric_names_reader(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names

"""Every script in examples/ runs, and shows the numbers it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_example_is_tested() -> None:
    tested = {"web_backend.py", "process_pipeline.py", "asyncio_app.py", "proxy_loky.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_web_backend() -> None:
    out = run("web_backend.py", "--once", "--port", "0")
    assert "100 submitted, 0 queued, 0 running, 100 completed, 0 failed" in out
    assert 'python_executor_submitted_tasks_total{executor="lookups",' in out
    assert out.rstrip().endswith(" 100.0")  # the scrape agrees with stats()


def test_process_pipeline() -> None:
    out = run("process_pipeline.py", "--once", "--port", "0")
    assert "200 submitted, 0 queued, 0 running, 200 completed, 0 failed" in out
    assert "2 initialized" in out


def test_asyncio_app() -> None:
    out = run("asyncio_app.py")
    assert out.startswith("21 calls; executor 'asyncio'")
    assert "21 submitted, 0 queued, 0 running, 21 completed" in out


def test_proxy_over_loky() -> None:
    pytest.importorskip("loky")
    out = run("proxy_loky.py")
    assert out.splitlines()[0] == str(sum(x * x for x in range(100)))
    assert "100 submitted, 0 queued, 0 running, 100 completed, 0 failed" in out
    assert out.rstrip().endswith(" 100.0")

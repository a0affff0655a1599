"""The guards that keep a hang from hanging CI, each made to fire on purpose.

* the per-test limit (pytest-timeout): a hanging test fails alone, every thread's stack
  printed, and the tests after it still run;
* the exit watchdog (tests/conftest.py): a pytest process that cannot exit after its
  last test prints its stacks and ends with status 1;
* ``.ci/step.py``, which runs every command of ``.ci/run``: a command past its limit is
  stopped, and so is every process it started, detached ones included.

The hanging tests live in ``tests/hang_probe.py``, which the suite never collects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
STEP = TESTS.parent / ".ci" / "step.py"
PROBE = TESTS / "hang_probe.py"


def run_probe(mode: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HANG_PROBE": mode}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(PROBE), "-p", "no:cacheprovider", *options],
        cwd=TESTS.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,  # the guard under test failing must fail this test, not hang it
        check=False,
    )


def test_a_hanging_test_fails_alone_with_every_threads_stack() -> None:
    started = time.monotonic()
    result = run_probe("test", "-o", "timeout=2", "-o", "exit_timeout=30")
    out = result.stdout
    assert result.returncode == 1, out
    assert time.monotonic() - started < 60, out
    assert "Timeout" in out, out
    # The stuck line of the test, and the helper thread's stack beside the main one's.
    assert "lock.acquire()  # never returns" in out, out
    assert "probe-helper" in out, out
    assert "_helper_thread_waits_forever" in out, out
    assert "FAILED tests/hang_probe.py::test_hangs_in_a_lock" in out, out
    assert "1 failed, 1 passed" in out, out


def test_a_process_that_cannot_exit_prints_its_stacks_and_ends() -> None:
    started = time.monotonic()
    result = run_probe("exit", "-o", "exit_timeout=2")
    out = result.stdout
    assert "1 passed" in out, out
    assert result.returncode == 1, out
    assert time.monotonic() - started < 60, out
    assert "Timeout (0:00:02)!" in out, out
    # The main thread waits in threading's shutdown for the thread that never ends.
    assert "_shutdown" in out, out
    assert "_helper_thread_waits_forever" in out, out


def run_step(limit: float, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(STEP), "--step", "probe step", "--limit", str(limit)]
    return subprocess.run(
        [*command, "--", "sh", "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,
        check=False,
    )


def assert_gone(pid: int) -> None:
    # step.py reaps what it kills (it is the subreaper of the tree): no zombie either.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# A child in a session of its own (out of reach of timeout(1)'s process-group kill),
# and an orphan from a double fork, handed to the subreaper when its parent exits.
DETACHED = (
    "setsid sleep 600 & echo $! > detached; "
    "(sleep 600 & echo $! > orphan) ; "
    "while [ ! -s detached ] || [ ! -s orphan ]; do sleep 0.05; done; "
)


def test_step_stops_a_command_past_its_limit_and_all_it_started(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_step(2, DETACHED + "sleep 600", tmp_path)
    out = result.stdout
    assert result.returncode == 124, out
    assert time.monotonic() - started < 45, out
    assert 'TIMEOUT: step "probe step" ran out of its 2s limit' in out, out
    detached = int((tmp_path / "detached").read_text())
    orphan = int((tmp_path / "orphan").read_text())
    # The process tree was shown before it was killed.
    assert f"{detached} " in out, out
    assert "sleep 600" in out, out
    assert_gone(detached)
    assert_gone(orphan)


def test_step_keeps_the_status_and_kills_what_a_command_left(tmp_path: Path) -> None:
    result = run_step(60, DETACHED + "exit 3", tmp_path)
    out = result.stdout
    assert result.returncode == 3, out
    assert "left these processes running" in out, out
    assert_gone(int((tmp_path / "detached").read_text()))
    assert_gone(int((tmp_path / "orphan").read_text()))


def test_step_without_time_left_does_not_start(tmp_path: Path) -> None:
    result = run_step(0, "touch started", tmp_path)
    assert result.returncode == 124, result.stdout
    assert "no time left" in result.stdout, result.stdout
    assert not (tmp_path / "started").exists()

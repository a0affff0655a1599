"""Deliberately hanging tests, run only by tests/test_hang_guards.py (never collected by
the suite: the name does not match ``test_*.py``).

``HANG_PROBE`` in the environment picks what hangs:

* ``test``: ``test_hangs_in_a_lock`` blocks forever; the per-test timeout must stop it,
  print every thread's stack (the helper thread's too) and fail it alone, so that
  ``test_runs_after_the_hang`` still runs and passes.
* ``exit``: every test passes, but a non-daemon thread never ends, so the interpreter
  would wait for it forever at exit; the exit watchdog must dump the stacks and end the
  process.
"""

from __future__ import annotations

import os
import threading

import pytest

MODE = os.environ.get("HANG_PROBE", "")
_never = threading.Event()


def _helper_thread_waits_forever() -> None:
    _never.wait()


@pytest.mark.skipif(MODE != "test", reason="HANG_PROBE=test only")
def test_hangs_in_a_lock() -> None:
    threading.Thread(target=_helper_thread_waits_forever, daemon=True, name="probe-helper").start()
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # never returns


@pytest.mark.skipif(MODE != "test", reason="HANG_PROBE=test only")
def test_runs_after_the_hang() -> None:
    assert True


@pytest.mark.skipif(MODE != "exit", reason="HANG_PROBE=exit only")
def test_leaves_a_thread_that_blocks_exit() -> None:
    # Not a daemon: threading's shutdown joins it, and it never ends.
    threading.Thread(
        target=_helper_thread_waits_forever, daemon=False, name="probe-blocks-exit"
    ).start()

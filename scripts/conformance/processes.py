"""Child processes: finding them (``/proc``, ``ps``, multiprocessing), naming, killing."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
import unittest
from collections.abc import Iterable
from pathlib import Path


def _process_table() -> dict[int, tuple[int, str]]:
    """``pid: (ppid, state)`` of every process, from /proc."""
    table: dict[int, tuple[int, str]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = (int(ppid), state)
    return table


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 150 else text[:147] + "..."


def descendants() -> set[int]:
    """This process's descendants that are alive (not zombies), from /proc."""
    table = _process_table()
    found: set[int] = set()
    parents = {os.getpid()}
    while parents:
        parents = {
            pid
            for pid, (ppid, state) in table.items()
            if ppid in parents and state != "Z" and pid not in found
        }
        found |= parents
    return found


def _ps_children() -> set[int]:
    """This process's live children as ``ps --ppid`` lists them (``ps`` itself left out)."""
    if shutil.which("ps") is None:
        return set()
    with subprocess.Popen(
        ["ps", "--ppid", str(os.getpid()), "-o", "pid=,stat="], stdout=subprocess.PIPE, text=True
    ) as ps:
        out, _ = ps.communicate()
    found: set[int] = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and int(fields[0]) != ps.pid and not fields[1].startswith("Z"):
            found.add(int(fields[0]))
    return found


def live_processes() -> set[int]:
    """Live children and grandchildren: multiprocessing's view, ``ps`` and /proc."""
    found = {child.pid for child in multiprocessing.active_children() if child.pid is not None}
    found |= _ps_children()
    return found | descendants()


def infrastructure_pids() -> set[int]:
    """The forkserver and the resource tracker: they outlive single tests by design (the
    test modules' cleanup, ``multiprocessing.util._cleanup_tests``, stops them)."""
    pids: set[int] = set()
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver, resource_tracker

        for pid in (
            getattr(forkserver._forkserver, "_forkserver_pid", None),
            getattr(resource_tracker._resource_tracker, "_pid", None),
        ):
            if pid:
                pids.add(pid)
    return pids


class ChildTracker:
    """Remembers after which test each child process was first seen alive."""

    def __init__(self) -> None:
        self.first_seen: dict[int, str] = {}

    def note(self, after: str) -> None:
        for pid in descendants():
            self.first_seen.setdefault(pid, after)

    def describe(self, pids: Iterable[int]) -> str:
        lines = []
        for pid in sorted(pids):
            seen = self.first_seen.get(pid)
            where = f" (alive since {seen})" if seen else ""
            lines.append(f"  pid {pid}{where}: {cmdline(pid)}")
        return "\n".join(lines)


def kill(pids: Iterable[int]) -> None:
    """SIGKILL processes this run started, so that none outlives it; reap the children."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        # A grandchild raises ChildProcessError: its own parent (killed too) or init reaps it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


TRACKER = ChildTracker()


class PostRunChecks(unittest.TestCase):
    """Runs last, after the test modules' own cleanup (which stops the forkserver and
    resource tracker): by then no process started by the run may be alive."""

    grace_seconds = 5.0

    def test_no_child_process_left(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        alive = live_processes()
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = live_processes()
        if alive:
            report = TRACKER.describe(alive)
            kill(alive)
            self.fail(f"processes still alive after the run (now killed):\n{report}")

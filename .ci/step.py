#!/usr/bin/env python3
"""Run one command of a CI step under a time limit, and leave no process of it behind.

Usage::

    python3 .ci/step.py --step NAME --limit SECONDS -- COMMAND [ARG ...]

The command runs in a session of its own.  This process makes itself a *child
subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so every process the command starts,
even one that detached with ``setsid`` or lost its parent, stays a descendant of this
one and can be found.  That is what ``timeout(1)`` cannot do: it signals one process
group, and a pool worker or a server in a session of its own outlives it.

When the command ends, whatever it left running is listed and killed.  When the limit
runs out, one line naming the step is printed, then the process tree with its command
lines (what was stuck, and where), then every process of the tree is killed:
``SIGTERM``, a grace period, ``SIGKILL``.  Nothing returns before the tree is gone, so
the next step starts clean.

Exit status: the command's own; 124 when the limit ran out (as ``timeout(1)``); 128+N
when this process was stopped by signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TIMED_OUT = 124
GRACE_SECONDS = 5.0
REAP_SECONDS = 30.0


def _say(message: str) -> None:
    print(f"ci-step: {message}", file=sys.stderr, flush=True)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        # Without it the tree can still be walked while it is intact; say so, go on.
        _say(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


def _parents() -> dict[int, int]:
    """Every live process's parent, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rindex(b")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def _descendants() -> list[int]:
    """This process's descendants, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return f"{pid:>7}  (gone)"
    fields = stat[stat.rindex(b")") + 2 :].split()
    state, ppid = fields[0].decode(), int(fields[1])
    command = " ".join(a.decode(errors="replace") for a in argv)
    if len(command) > 200:
        command = command[:197] + "..."
    return f"{pid:>7} {ppid:>7}  {state}  {command}"


def _show_tree(title: str, pids: list[int]) -> None:
    _say(title)
    print("    PID    PPID  S  COMMAND", file=sys.stderr)
    for pid in pids:
        print(_describe(pid), file=sys.stderr)
    sys.stderr.flush()


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap() -> None:
    """Collect every child that has ended (ours, or an orphan handed to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_tree(command: subprocess.Popen[bytes]) -> None:
    """End every descendant: SIGTERM, a grace period, then SIGKILL until none is left."""
    _signal_all(_descendants(), signal.SIGTERM)
    started = time.monotonic()
    while pids := _descendants():
        waited = time.monotonic() - started
        if waited > GRACE_SECONDS + REAP_SECONDS:
            _show_tree("these processes would not die (uninterruptible sleep?):", pids)
            return
        if waited > GRACE_SECONDS:
            # A process killed mid-tree hands its children to us: each round looks again.
            _signal_all(pids, signal.SIGKILL)
        time.sleep(0.1)
        command.poll()
        _reap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", required=True, help="the step's name, for the messages")
    parser.add_argument("--limit", required=True, type=float, help="seconds the command may take")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command_argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command_argv:
        parser.error("no command given")

    _become_subreaper()
    if args.limit <= 0:
        _say(f'TIMEOUT: step "{args.step}" has no time left of its budget; not starting it')
        return TIMED_OUT

    command = subprocess.Popen(command_argv, start_new_session=True)

    # CI itself being stopped (Ctrl-C, the runner's SIGTERM) takes the tree down too.
    def stop(signum: int, _frame: object) -> None:
        _say(f"got signal {signum}; ending the step's processes")
        _kill_tree(command)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    try:
        rc = command.wait(timeout=args.limit)
    except subprocess.TimeoutExpired:
        # One line that says which step, first: it is what a reader of the log looks for.
        _say(
            f'TIMEOUT: step "{args.step}" ran out of its {args.limit:.0f}s limit; '
            "killing its processes"
        )
        _show_tree("the step's processes when it ran out of time:", _descendants())
        _kill_tree(command)
        return TIMED_OUT

    # Helpers that end on their own once the command is gone (multiprocessing's resource
    # tracker and forkserver read EOF, then exit) get a moment to do so.
    deadline = time.monotonic() + 2.0
    while (left := _descendants()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    if left:
        _show_tree(f'step "{args.step}" left these processes running; killing them:', left)
        _kill_tree(command)
    return rc


if __name__ == "__main__":
    sys.exit(main())

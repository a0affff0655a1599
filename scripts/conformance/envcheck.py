"""As in CPython's own CI (regrtest ``--fail-env-changed``), a test that changes the
environment counts as failed.

Around each test (``EnvironmentCheck``):

* ``test.support.environment_altered`` is reset before and read after: the suite's own
  helpers set it (``threading_helper.threading_cleanup`` for dangling threads,
  ``support.reap_children`` for unreaped children), and so do the unraisable-exception
  and thread-exception hooks installed here, as regrtest installs them;
* threads started by the test and still alive after it (1 s grace, as
  ``threading_cleanup``), for the classes that are not on ``BaseTestCase``;
* child processes started by the test and still alive after it (a grace period), the
  forkserver and the resource tracker left aside (they live until the module cleanup);
* ``gc.garbage``, after a full collection (``support.gc_collect()``, as regrtest).

Set outside any test (class and module fixtures, module cleanups), the flag is reported
against those fixtures.

``StderrCapture`` makes fd 2 a pipe read by a thread that forwards everything to the real
stderr and picks out multiprocessing's resource-tracker reports ("resource_tracker: There
appear to be N leaked semaphore objects to clean up at shutdown", ...), which the tracker
process prints on the stderr it inherited: each is kept with the test that was running
when it was read.
"""

from __future__ import annotations

import gc
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .processes import cmdline, descendants, infrastructure_pids


class EnvironmentCheck:
    """Per-test environment checks; ``before()`` and ``after()`` bracket each test."""

    thread_grace = 1.0
    process_grace = 5.0

    def __init__(self) -> None:
        from test import support

        self.support = support
        self.warnings: list[str] = []
        self._threads: set[threading.Thread] = set()
        self._processes: set[int] = set()
        self._install_hooks()

    # -- hooks -----------------------------------------------------------------------

    def _install_hooks(self) -> None:
        """Record ``support.print_warning`` messages; flag unraisable and thread errors."""
        support = self.support
        print_warning = support.print_warning

        def recording_print_warning(msg: str) -> None:
            self.warnings.append(msg)
            print_warning(msg)

        recording_print_warning.orig_stderr = getattr(  # type: ignore[attr-defined]
            print_warning, "orig_stderr", sys.__stderr__
        )
        support.print_warning = recording_print_warning

        unraisablehook = sys.unraisablehook
        excepthook = threading.excepthook

        def on_unraisable(unraisable: Any) -> None:
            support.environment_altered = True
            self.warnings.append(f"unraisable exception: {unraisable.exc_type.__name__}")
            unraisablehook(unraisable)

        def on_thread_exception(args: Any) -> None:
            support.environment_altered = True
            name = args.thread.name if args.thread is not None else "?"
            self.warnings.append(f"uncaught exception in thread {name}: {args.exc_type.__name__}")
            excepthook(args)

        sys.unraisablehook = on_unraisable
        threading.excepthook = on_thread_exception

    # -- around tests ----------------------------------------------------------------

    def pending(self) -> str | None:
        """What was flagged since the last test ended (fixtures, module cleanup)."""
        found = self._flag_reasons()
        self.support.environment_altered = False
        self.warnings.clear()
        return "; ".join(found) if found else None

    def before(self) -> None:
        self.support.environment_altered = False
        self.warnings.clear()
        self._threads = set(threading.enumerate())
        self._processes = descendants()

    def after(self) -> str | None:
        """Why the test changed the environment, or None."""
        # A pool that only a reference cycle keeps alive (a future's exception whose
        # traceback holds the test's frame, say) is garbage, not a leak: collect it, as
        # regrtest does around each test module, so that its semaphores are unregistered
        # before the resource tracker is asked what is left.
        self.support.gc_collect()
        self.support.reap_children()  # as regrtest does after each test module
        reasons = self._flag_reasons()
        if not any("Dangling thread" in r for r in reasons):
            reasons += self._new_threads()
        reasons += self._new_processes()
        if gc.garbage:
            reasons.append(f"{len(gc.garbage)} uncollectable object(s) in gc.garbage")
            gc.garbage.clear()
        self.support.environment_altered = False
        self.warnings.clear()
        return "; ".join(reasons) if reasons else None

    def _flag_reasons(self) -> list[str]:
        if not self.support.environment_altered:
            return []
        return [" | ".join(self.warnings)] if self.warnings else ["environment_altered set"]

    def _new_threads(self) -> list[str]:
        deadline = time.monotonic() + self.thread_grace
        while True:
            new = [t for t in threading.enumerate() if t not in self._threads and t.is_alive()]
            if not new or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return [f"dangling thread {t!r}" for t in new]

    def _new_processes(self) -> list[str]:
        deadline = time.monotonic() + self.process_grace
        while True:
            new = descendants() - self._processes - infrastructure_pids()
            if not new or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return [f"child process {pid} still alive: {cmdline(pid)}" for pid in sorted(new)]


# -- stderr ---------------------------------------------------------------------------

TRACKER_REPORT = re.compile(r"resource_tracker: .*")


class StderrCapture:
    """fd 2 through a pipe: forwarded to the real stderr, scanned for tracker reports."""

    def __init__(self, where: Callable[[], str]) -> None:
        self.where = where  # the test running now, for attributing reports
        self.reports: list[tuple[str, str]] = []  # (where, line)
        self._saved_fd = -1
        self._read_fd = -1
        self._thread: threading.Thread | None = None
        self.real_stderr: io.TextIOWrapper | None = None

    def start(self) -> None:
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        # A text stream on the real stderr, for output that must not depend on the pump
        # thread (the watchdog's tracebacks, faulthandler's last resort).
        self.real_stderr = open(  # noqa: SIM115 - lives as long as the run
            self._saved_fd, "w", buffering=1, closefd=False, errors="backslashreplace"
        )
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._pump, name="conformance-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._forward(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._scan(line)
        if pending:
            self._scan(pending)

    def _forward(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(self._saved_fd, view)
            except OSError:
                return  # the real stderr is gone: keep draining the pipe regardless
            view = view[written:]

    def _scan(self, raw: bytes) -> None:
        match = TRACKER_REPORT.search(raw.decode(errors="replace"))
        if match:
            self.reports.append((self.where(), match.group(0).strip()))

    def stop(self, timeout: float = 10.0) -> bool:
        """Put the real stderr back; wait for the pipe to drain.  False if some process
        still holds the pipe open after ``timeout`` (its later output is lost)."""
        if self._thread is None:
            return True
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)  # our copy of the write end is closed here
        self._thread.join(timeout)
        drained = not self._thread.is_alive()
        if drained:
            os.close(self._read_fd)
        self._thread = None
        return drained

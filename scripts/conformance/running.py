"""Running one selection: the result that records outcomes, the watchdog, the summary."""

from __future__ import annotations

import faulthandler
import json
import math
import os
import re
import sys
import threading
import time
import unittest
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .envcheck import EnvironmentCheck, StderrCapture
from .processes import TRACKER, PostRunChecks, kill, live_processes
from .selection import KINDS, Selection, module_label, test_id

ORDER = ("passed", "skipped", "failed")


@dataclass
class RunInfo:
    """What a run is, for its summary and report."""

    mode: str  # "ours" or "stdlib"
    source: str
    executor_types: dict[str, str]  # mixin -> class
    selection: Selection
    start: float = field(default_factory=time.monotonic)


class Watchdog(threading.Thread):
    """Ends a run that makes no progress: tracebacks, leftover processes, summary, exit 1.

    Armed at each test's start and end, so fixtures and module cleanup (which waits for
    the forkserver, hence for every worker it forked) are covered too.  faulthandler's
    hard exit backs it up in case this thread cannot run.
    """

    def __init__(self, timeout: float, expire: Callable[[str], None], stream: TextIO) -> None:
        super().__init__(name="conformance-watchdog", daemon=True)
        self.timeout = timeout
        self.expire = expire
        self.stream = stream
        self.what = "start-up"
        self.deadline = math.inf

    def arm(self, what: str) -> None:
        if not self.timeout:
            return
        self.what = what
        self.deadline = time.monotonic() + self.timeout
        faulthandler.dump_traceback_later(self.timeout + 60, exit=True, file=self.stream)

    def disarm(self) -> None:
        self.deadline = math.inf
        faulthandler.cancel_dump_traceback_later()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            time.sleep(0.5)
        self.expire(self.what)


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.MULTILINE)


def summarize(traceback_text: str) -> str:
    """One line: the exception and the innermost frame (``file:line in function``)."""
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "?"
    frames = _FRAME.findall(traceback_text)
    if frames:
        path, line, func = frames[-1]
        last = f"{last}  [{Path(path).name}:{line} in {func}]"
    return last if len(last) <= 300 else last[:297] + "..."


class RecordingResult(unittest.TextTestResult):
    """A text result that keeps one outcome per test, checks the environment around each
    test, times them, and arms the watchdog."""

    watchdog: Watchdog | None = None
    env: EnvironmentCheck | None = None
    kinds: dict[str, str] | None = None

    def __init__(self, stream: Any, descriptions: bool, verbosity: int, **kw: Any) -> None:
        super().__init__(stream, descriptions, verbosity, **kw)
        self.outcomes: dict[str, str] = {}
        self.skip_reasons: dict[str, str] = {}
        self.summaries: dict[str, str] = {}
        self.env_changed: dict[str, str] = {}
        self.timings: dict[str, float] = {}  # "module kind" -> seconds
        self.where = "start-up"
        self._previous = "start-up"
        self._started = 0.0

    # -- bookkeeping ---------------------------------------------------------------------

    def _set(self, tid: str, outcome: str, summary: str | None = None) -> None:
        previous = self.outcomes.get(tid)
        if previous is None or ORDER.index(outcome) > ORDER.index(previous):
            self.outcomes[tid] = outcome
        if summary:
            before = self.summaries.get(tid)
            self.summaries[tid] = f"{before}; {summary}" if before else summary

    def record_failure(self, tid: str, summary: str) -> None:
        """A failure found by this script (env changed, tracker report, fixtures)."""
        self._set(tid, "failed", summary)
        self.stream.write(f"\nFAILED {tid}: {summary}\n")
        self.stream.flush()

    @staticmethod
    def _id(test: Any) -> str:
        return test_id(test) if isinstance(test, unittest.TestCase) else str(test)

    # -- around each test ----------------------------------------------------------------

    def startTest(self, test: unittest.TestCase) -> None:
        tid = test_id(test)
        if self.env is not None:
            pending = self.env.pending()
            if pending:
                label = f"the fixtures between {self._previous} and {tid}"
                self.env_changed[label] = pending
                self.record_failure(label, f"env changed: {pending}")
            self.env.before()
        if self.watchdog is not None:
            self.watchdog.arm(tid)
        self.where = tid
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        tid = test_id(test)
        if self.env is not None and not isinstance(test, PostRunChecks):
            changed = self.env.after()
            if changed:
                self.env_changed[tid] = changed
                self.record_failure(tid, f"env changed: {changed}")
        kind = (self.kinds or {}).get(tid, "-")
        key = f"{module_label(test)} {kind}"
        self.timings[key] = self.timings.get(key, 0.0) + time.monotonic() - self._started
        TRACKER.note(tid)
        self._previous = tid
        self.where = f"the fixtures or module cleanup after {tid}"
        if self.watchdog is not None:
            self.watchdog.arm(self.where)

    # -- outcomes ------------------------------------------------------------------------

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._set(self._id(test), "passed")

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set(self._id(test), "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._set(self._id(test), "failed", summarize(self.failures[-1][1]))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        # Also called with holders for setUpModule, setUpClass and cleanup errors.
        super().addError(test, err)
        self._set(self._id(test), "failed", summarize(self.errors[-1][1]))

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set(self._id(test), "failed", "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        if issubclass(err[0], unittest.SkipTest):
            self._set(self._id(test), "skipped")
        else:
            text = self.failures if issubclass(err[0], test.failureException) else self.errors
            summary = summarize(text[-1][1]) if text else str(err[1])
            self._set(self._id(test), "failed", f"{subtest._subDescription()}: {summary}")  # type: ignore[attr-defined]

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        tid = self._id(test)
        self._set(tid, "skipped")
        self.skip_reasons[tid] = reason

    def add_tracker_reports(self, reports: list[tuple[str, str]]) -> None:
        """Each resource-tracker report fails the test (or fixtures) it was read during."""
        for where, line in reports:
            self._set(where, "failed", f"resource tracker: {line}")


# -- summary and report -----------------------------------------------------------------


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    found = dict.fromkeys(ORDER, 0)
    for outcome in outcomes.values():
        found[outcome] += 1
    return found


def final_line(found: dict[str, int]) -> str:
    return (
        f"conformance: {found['passed']} passed, {found['failed']} failed, "
        f"{found['skipped']} skipped"
    )


def _timing_lines(timings: dict[str, float]) -> list[str]:
    """Seconds by module and kind of pool, the slowest first."""
    rows = sorted(timings.items(), key=lambda item: -item[1])
    by_kind: dict[str, float] = {}
    for key, seconds in timings.items():
        kind = key.rsplit(" ", 1)[-1]
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    kinds = ", ".join(
        f"{k} {by_kind[k]:.1f}s" for k in (*KINDS, "-") if by_kind.get(k, 0.0) >= 0.05
    )
    return [f"by kind: {kinds}"] + [f"{key}: {seconds:.1f}s" for key, seconds in rows[:12]]


def print_summary(
    result: RecordingResult, info: RunInfo, tracker_reports: list[tuple[str, str]]
) -> bool:
    """Print the summary and the final line; return whether everything passed."""
    elapsed = time.monotonic() - info.start
    excluded = info.selection.excluded
    out = sys.stdout
    out.write(
        f"\n{'=' * 78}\nconformance summary ({info.mode} classes): {elapsed:.1f}s, "
        f"Python {sys.version.split()[0]}\n"
    )
    out.write(f"  tests from: {info.source}\n")
    for mixin, cls in info.executor_types.items():
        out.write(f"  {mixin}.executor_type = {cls}\n")
    failed = sorted(t for t, o in result.outcomes.items() if o == "failed")
    sections = [
        (f"failed ({len(failed)})", [f"{t}: {result.summaries.get(t, '')}" for t in failed]),
        (
            f"env changed ({len(result.env_changed)}, counted as failed)",
            [f"{t}: {r}" for t, r in sorted(result.env_changed.items())],
        ),
        (
            f"resource tracker reports ({len(tracker_reports)}, counted as failed)",
            [f"{line}  (read during {where})" for where, line in tracker_reports],
        ),
        (
            f"excluded ({len(excluded)}, counted as skipped)",
            [f"{t}: {r}" for t, r in sorted(excluded.items())],
        ),
        (
            "skipped by the test suite",
            [f"{t}: {r}" for t, r in sorted(result.skip_reasons.items()) if t not in excluded],
        ),
        ("time (each test with its setUp and tearDown)", _timing_lines(result.timings)),
    ]
    for title, lines in sections:
        if lines:
            out.write(f"  {title}:\n" + "".join(f"    {line}\n" for line in lines))
    out.write(
        "  (the totals include the post-run check PostRunChecks.test_no_child_process_left)\n"
    )
    out.write(f"conformance {info.mode} run took {elapsed:.1f}s\n")
    out.write(final_line(counts(result.outcomes)) + "\n")
    out.flush()
    return not failed and result.wasSuccessful()


def write_report(
    path: Path | None,
    result: RecordingResult,
    info: RunInfo,
    tracker_reports: list[tuple[str, str]],
) -> None:
    """The run as JSON, for ``--compare`` (which runs each side in its own process)."""
    if path is None:
        return
    report = {
        "mode": info.mode,
        "python": sys.version.split()[0],
        "source": info.source,
        "elapsed": time.monotonic() - info.start,
        "counts": counts(result.outcomes),
        "outcomes": result.outcomes,
        "summaries": result.summaries,
        "env_changed": result.env_changed,
        "excluded": info.selection.excluded,
        "tracker_reports": tracker_reports,
        "timings": result.timings,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run(info: RunInfo, timeout: float, verbose: bool, report: Path | None) -> bool:
    """Run the selection (plus the post-run checks) with fd 2 captured; summarize."""
    suite = info.selection.suite
    suite.addTests(unittest.TestLoader().loadTestsFromTestCase(PostRunChecks))
    results: list[RecordingResult] = []
    capture = StderrCapture(lambda: results[0].where if results else "start-up")
    capture.start()
    real_stderr = capture.real_stderr
    assert real_stderr is not None
    env = EnvironmentCheck()

    def make_result(stream: Any, descriptions: bool, verbosity: int) -> RecordingResult:
        result = RecordingResult(stream, descriptions, verbosity)
        result.watchdog = watchdog
        result.env = env
        result.kinds = info.selection.kinds
        results.append(result)
        return result

    def expire(what: str) -> None:
        real_stderr.write(
            f"\nconformance: TIMEOUT: no progress for {timeout:.0f}s in {what}; tracebacks:\n"
        )
        real_stderr.flush()
        faulthandler.dump_traceback(file=real_stderr, all_threads=True)
        alive = live_processes()
        if alive:
            real_stderr.write(f"processes alive (now killed):\n{TRACKER.describe(alive)}\n")
            kill(alive)
        real_stderr.flush()
        if results:
            results[0].outcomes[f"TIMEOUT in {what}"] = "failed"
            print_summary(results[0], info, capture.reports)
            write_report(report, results[0], info, capture.reports)
        os._exit(1)

    watchdog = Watchdog(timeout, expire, real_stderr)
    if timeout:
        watchdog.start()
    runner = unittest.TextTestRunner(
        stream=sys.stderr, verbosity=2 if verbose else 1, resultclass=make_result
    )
    watchdog.arm("the module set-up")
    result = runner.run(suite)
    watchdog.disarm()
    assert isinstance(result, RecordingResult)
    result.where = "the end of the run"
    if not capture.stop():
        real_stderr.write("conformance: some process still holds stderr open\n")
    result.add_tracker_reports(capture.reports)
    ok = print_summary(result, info, capture.reports)
    write_report(report, result, info, capture.reports)
    return ok and not capture.reports

#!/usr/bin/env python3
"""Drop-in proof: run CPython's own executor tests against executor_exporter's classes.

The tests are ``Lib/test/test_concurrent_futures.py`` of the running Python's minor
version, taken from Debian's ``libpython3.X-testsuite`` package (fetched with
``apt-get download`` and cached under ``.cache/conformance/``, which git ignores) or
from an extracted copy given with ``--testsuite-dir``.  The file is never copied into
the repository.

Every test class built on a pool mixin of that module is run, with our class in place
of the stdlib's:

* the mixins' ``executor_type`` is set to ``executor_exporter.ThreadPoolExecutor``
  (``ThreadPoolMixin``) or ``executor_exporter.ProcessPoolExecutor`` (the fork, spawn
  and forkserver mixins);
* the module's ``futures`` name (``concurrent.futures``) is replaced by a view that
  returns our classes, for the tests that construct ``futures.ThreadPoolExecutor(...)``
  themselves;
* the tests that start a fresh interpreter (``assert_python_ok('-c', code)``) get
  ``from concurrent.futures import X`` rewritten to ``from executor_exporter import X``.

Threads are the default; ``--process`` runs the process pool classes instead and
``--all`` runs both.  ``--stdlib`` runs the same selection against the unmodified
stdlib classes, to tell library bugs from test-suite or version skew.  After the tests,
a last check fails if any child process of this one is still alive.

Usage::

    .venv/bin/python scripts/conformance.py            # thread pool
    .venv/bin/python scripts/conformance.py --all      # thread and process pools
    .venv/bin/python scripts/conformance.py -k ShutdownTest -v

The last line printed is ``conformance: N passed, M failed, K skipped``; the exit status
is non-zero when anything failed or errored.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import faulthandler
import fnmatch
import importlib
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "conformance"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
TESTSUITE_PACKAGE = f"libpython{PY_VERSION}-testsuite"
MODULE = "test_concurrent_futures"

THREAD_MIXIN = "ThreadPoolMixin"
PROCESS_MIXINS = {
    "fork": "ProcessPoolForkMixin",
    "spawn": "ProcessPoolSpawnMixin",
    "forkserver": "ProcessPoolForkserverMixin",
}

#: Tests that cannot apply to a subclass, as fnmatch patterns on ``Class.test_method``,
#: each with the reason (the private attribute read, or the cause).  A test is listed
#: here only when it cannot pass for such a reason: a test that fails for any other
#: reason is a library bug and must stay visible.  Both pools subclass the stdlib
#: classes and keep their private attributes (``_threads``, ``_work_queue``,
#: ``_processes``, ``_call_queue``, ``_broken``, ``_max_workers``...), so the tests that
#: read them do apply and are run.
EXCLUDED: dict[str, str] = {}

#: Our own checks, run after the CPython tests (counted in the totals).
CHECKS_CLASS = "PostRunChecks"


# -- getting the test file --------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _find_module_file(root: Path) -> Path | None:
    """Return ``test_concurrent_futures.py`` under ``root`` (or ``root`` itself)."""
    if root.is_file():
        return root if root.name == f"{MODULE}.py" else None
    preferred = root / "usr" / "lib" / f"python{PY_VERSION}" / "test" / f"{MODULE}.py"
    for candidate in (preferred, root / "test" / f"{MODULE}.py", root / f"{MODULE}.py"):
        if candidate.is_file():
            return candidate
    return next(iter(sorted(root.rglob(f"{MODULE}.py"))), None)


def _apt_download(workdir: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit(
            "conformance: apt-get/dpkg not found; pass --testsuite-dir with an extracted "
            f"{TESTSUITE_PACKAGE}"
        )
    download = ["apt-get", "download", TESTSUITE_PACKAGE]
    result = _run(download, cwd=workdir)
    if result.returncode != 0:
        print("conformance: apt-get download failed, running apt-get update once", flush=True)
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise SystemExit(f"conformance: apt-get update failed:\n{update.stderr}")
        result = _run(download, cwd=workdir)
    debs = sorted(workdir.glob(f"{TESTSUITE_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SystemExit(f"conformance: could not download {TESTSUITE_PACKAGE}:\n{result.stderr}")
    return debs[-1]


def fetch_testsuite(cache_dir: Path, refresh: bool) -> Path:
    """Return the cached extracted package root, downloading it when missing."""
    target = cache_dir / TESTSUITE_PACKAGE
    if refresh:
        shutil.rmtree(target, ignore_errors=True)
    if target.is_dir() and _find_module_file(target) is not None:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"conformance: fetching {TESTSUITE_PACKAGE} into {target}", flush=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as tmp:
        work = Path(tmp)
        deb = _apt_download(work)
        root = work / "root"
        extract = _run(["dpkg", "-x", str(deb), str(root)])
        if extract.returncode != 0:
            raise SystemExit(f"conformance: dpkg -x {deb.name} failed:\n{extract.stderr}")
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
        (root / "VERSION").write_text(f"{TESTSUITE_PACKAGE} {version or deb.name}\n")
        if _find_module_file(root) is None:
            raise SystemExit(f"conformance: {deb.name} has no {MODULE}.py")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(root, target)  # whole, so an interrupted fetch leaves no half cache
    return target


def describe_source(root: Path, module_file: Path) -> str:
    for parent in (root, *module_file.parents):
        version = parent / "VERSION"
        if version.is_file():
            return f"{module_file} ({version.read_text().strip()})"
    return str(module_file)


# -- loading and patching the test module -----------------------------------------------


def load_test_module(module_file: Path, import_dir: Path) -> tuple[types.ModuleType, list[str]]:
    """Import the test file as top-level ``test_concurrent_futures``.

    It is copied alone into ``import_dir``, put first on ``sys.path`` so that spawned and
    forkserver workers (which get the parent's ``sys.path``) can unpickle its functions.
    It uses the running interpreter's ``test.support`` (Debian ships that in
    libpython3.X-stdlib, not in the testsuite package).  Returns the module and the
    paths added to ``sys.path``, which fresh interpreters started by the tests need too.
    """
    try:
        importlib.import_module("test.support.script_helper")
    except ImportError as exc:
        raise SystemExit(
            f"conformance: this Python has no usable test.support ({exc}); use one that "
            "ships its test package (pyenv and python.org builds do)"
        ) from None
    shutil.copy2(module_file, import_dir / f"{MODULE}.py")
    added = [str(import_dir)]
    sys.path[:0] = added
    try:
        module = importlib.import_module(MODULE)
    except unittest.SkipTest as exc:
        raise SystemExit(f"conformance: the test module skips itself here: {exc}") from None
    return module, added


class FuturesView(types.ModuleType):
    """``concurrent.futures`` as the test module sees it, with our classes in it."""

    def __init__(self, overrides: dict[str, type]) -> None:
        super().__init__(concurrent.futures.__name__, concurrent.futures.__doc__)
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(concurrent.futures, name)


_FROM_FUTURES = re.compile(r"\bfrom\s+concurrent\.futures\s+import\s+(\w+)")


def rewrite_child_code(code: str, overrides: dict[str, type], sys_path: list[str]) -> str:
    """Make code run by a fresh interpreter use our classes and find the test module."""

    def swap(match: re.Match[str]) -> str:
        cls = overrides.get(match.group(1))
        if cls is None:
            return match.group(0)
        return f"from {cls.__module__.split('.')[0]} import {cls.__name__}"

    rewritten = _FROM_FUTURES.sub(swap, code).replace(f"test.{MODULE}", MODULE)
    for name in overrides:
        if re.search(rf"\bconcurrent\.futures\.{name}\b", rewritten):
            raise RuntimeError(f"cannot substitute {name} in child code:\n{code}")
    return f"import sys; sys.path[:0] = {sys_path!r}\n{rewritten}"


def patch_child_interpreters(
    module: types.ModuleType, overrides: dict[str, type], child_path: list[str]
) -> None:
    """Rewrite the code that tests run in a fresh interpreter (``assert_python_ok``)."""
    original = module.assert_python_ok

    def assert_python_ok(*args: Any, **env_vars: Any) -> Any:
        argv = list(args)
        if "-c" in argv:
            i = argv.index("-c") + 1
            argv[i] = rewrite_child_code(argv[i], overrides, child_path)
        return original(*argv, **env_vars)

    setattr(module, "assert_python_ok", assert_python_ok)  # noqa: B010 - typed module


def substitute(
    module: types.ModuleType, overrides: dict[str, type], mixins: dict[str, type]
) -> None:
    """Put our classes where the test module looks for executor classes."""
    for mixin_name, cls in mixins.items():
        getattr(module, mixin_name).executor_type = cls
    setattr(module, "futures", FuturesView(overrides))  # noqa: B010 - typed module

    # Every executor a pool test starts from must be one of ours.
    mixin_base = module.ExecutorMixin
    setup = mixin_base.setUp
    expected = tuple(mixins.values())

    def checked_setup(self: Any) -> None:
        setup(self)
        executor = getattr(self, "executor", None)
        if executor is not None and not isinstance(executor, expected):
            raise AssertionError(f"substitution failed: executor is {type(executor)!r}")

    mixin_base.setUp = checked_setup


def child_import_paths() -> list[str]:
    """Where a fresh ``-I`` interpreter finds executor_exporter (if not site-installed)."""
    import executor_exporter

    return [str(Path(executor_exporter.__file__).resolve().parents[1])]


# -- selecting tests ----------------------------------------------------------------------


def short_id(test: unittest.TestCase) -> str:
    return f"{type(test).__name__}.{test._testMethodName}"


def _matches(test_id: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatchcase(test_id, pattern):
                return True
        elif pattern in test_id:
            return True
    return False


def excluded_reason(test_id: str) -> str | None:
    for pattern, reason in EXCLUDED.items():
        if fnmatch.fnmatchcase(test_id, pattern):
            return reason
    return None


def _skip(test: unittest.TestCase, reason: str) -> None:
    """Make ``test`` report as skipped without running its setUp."""
    name = test._testMethodName

    def excluded(self: unittest.TestCase) -> None:  # pragma: no cover - never runs
        raise AssertionError("excluded test ran")

    excluded.__unittest_skip__ = True  # type: ignore[attr-defined]
    excluded.__unittest_skip_why__ = f"excluded: {reason}"  # type: ignore[attr-defined]
    setattr(test, name, types.MethodType(excluded, test))


def pool_test_classes(module: types.ModuleType, mixin_names: list[str]) -> list[type]:
    """Every TestCase of the module built on one of the given mixins, in mixin order."""
    found: list[type] = []
    for mixin_name in mixin_names:
        mixin = getattr(module, mixin_name)
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, unittest.TestCase)
            and issubclass(obj, mixin)
            and obj.__module__ == module.__name__
        ]
        found.extend(sorted(classes, key=lambda cls: cls.__name__))
    return found


def build_suite(
    classes: list[type], keywords: list[str], apply_exclusions: bool, excluded: dict[str, str]
) -> unittest.TestSuite:
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for cls in classes:
        for test in loader.loadTestsFromTestCase(cls):
            assert isinstance(test, unittest.TestCase)
            test_id = short_id(test)
            if keywords and not _matches(test_id, keywords):
                continue
            reason = excluded_reason(test_id) if apply_exclusions else None
            if reason is not None:
                excluded[test_id] = reason
                _skip(test, reason)
            suite.addTest(test)
    return suite


# -- child processes ---------------------------------------------------------------------


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


def _cmdline(pid: int) -> str:
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
            lines.append(f"  pid {pid}{where}: {_cmdline(pid)}")
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
    """Runs last, after the test module's own cleanup (which stops the forkserver and
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


# -- running ------------------------------------------------------------------------------


class Watchdog(threading.Thread):
    """Ends a run that makes no progress: tracebacks, leftover processes, summary, exit 1.

    Armed at each test's start and end, so fixtures and module cleanup (which waits for
    the forkserver, hence for every worker it forked) are covered too.  faulthandler's
    hard exit backs it up in case this thread cannot run.
    """

    def __init__(self, timeout: float, expire: Callable[[str], None]) -> None:
        super().__init__(name="conformance-watchdog", daemon=True)
        self.timeout = timeout
        self.expire = expire
        self.what = "start-up"
        self.deadline = math.inf

    def arm(self, what: str) -> None:
        if not self.timeout:
            return
        self.what = what
        self.deadline = time.monotonic() + self.timeout
        faulthandler.dump_traceback_later(self.timeout + 60, exit=True)

    def disarm(self) -> None:
        self.deadline = math.inf
        faulthandler.cancel_dump_traceback_later()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            time.sleep(0.5)
        self.expire(self.what)


class RecordingResult(unittest.TextTestResult):
    """A text result that also keeps one outcome per test and arms the watchdog."""

    watchdog: Watchdog | None = None

    def __init__(self, stream: Any, descriptions: bool, verbosity: int, **kw: Any) -> None:
        super().__init__(stream, descriptions, verbosity, **kw)
        self.outcomes: dict[str, str] = {}
        self.skip_reasons: dict[str, str] = {}

    def _set(self, test: Any, outcome: str) -> None:
        test_id = short_id(test) if isinstance(test, unittest.TestCase) else str(test)
        order = ("passed", "skipped", "failed")
        previous = self.outcomes.get(test_id)
        if previous is None or order.index(outcome) > order.index(previous):
            self.outcomes[test_id] = outcome

    def startTest(self, test: unittest.TestCase) -> None:
        if self.watchdog is not None:
            self.watchdog.arm(short_id(test))
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        TRACKER.note(short_id(test))
        if self.watchdog is not None:
            self.watchdog.arm(f"the fixtures or cleanup after {short_id(test)}")

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._set(test, "passed")

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._set(test, "failed")

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        # Also called with holders for setUpModule, setUpClass and cleanup errors.
        super().addError(test, err)
        self._set(test, "failed")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set(test, "failed")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "skipped" if issubclass(err[0], unittest.SkipTest) else "failed")

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._set(test, "skipped")
        test_id = short_id(test) if isinstance(test, unittest.TestCase) else str(test)
        self.skip_reasons[test_id] = reason


def _import_process_pool() -> type:
    _import_thread_pool()  # the package itself (from the work tree if not installed)
    try:
        cls = importlib.import_module("executor_exporter").ProcessPoolExecutor
    except Exception as exc:  # ImportError, AttributeError, or a half-written module
        raise SystemExit(
            "conformance: --process/--all need executor_exporter.ProcessPoolExecutor, which "
            f"cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, concurrent.futures.Executor)):
        raise SystemExit(
            "conformance: executor_exporter.ProcessPoolExecutor is not an Executor class"
        )
    return cls


def _import_thread_pool() -> type:
    try:
        from executor_exporter import ThreadPoolExecutor
    except ImportError:
        sys.path.insert(0, str(REPO / "src"))  # not installed: use the work tree
        from executor_exporter import ThreadPoolExecutor
    return ThreadPoolExecutor


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run CPython's concurrent.futures executor tests against "
        "executor_exporter's drop-in classes."
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--threads", action="store_true", help="thread pool tests (default)")
    kind.add_argument("--process", action="store_true", help="process pool tests only")
    kind.add_argument("--all", action="store_true", help="thread and process pool tests")
    parser.add_argument(
        "--start-method",
        action="append",
        choices=sorted(PROCESS_MIXINS),
        help="process pool start method (repeatable; default: all three)",
    )
    parser.add_argument(
        "--testsuite-dir",
        type=Path,
        help=f"an extracted {TESTSUITE_PACKAGE} (or a dir holding {MODULE}.py): no download",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the downloaded package is kept (default: %(default)s, git-ignored)",
    )
    parser.add_argument("--refresh", action="store_true", help="download the package again")
    parser.add_argument(
        "--stdlib",
        action="store_true",
        help="baseline: run against the unmodified stdlib classes (no substitution, no "
        "exclusions) to tell library bugs from test-suite or version skew",
    )
    parser.add_argument(
        "-k",
        dest="keywords",
        action="append",
        default=[],
        help="only tests whose Class.test_method contains this (or matches this glob)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="per-test watchdog: dump tracebacks and exit after this many seconds "
        "(0: none; default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    return parser.parse_args(argv)


def print_summary(
    result: RecordingResult,
    excluded: dict[str, str],
    elapsed: float,
    source: str,
    classes: dict[str, type],
) -> bool:
    """Print the summary and the final line; return whether everything passed."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in result.outcomes.values():
        counts[outcome] += 1
    out = sys.stdout
    out.write(
        f"\n{'=' * 78}\nconformance summary ({elapsed:.1f}s, Python {sys.version.split()[0]})\n"
    )
    out.write(f"  tests from: {source}\n")
    for mixin, cls in classes.items():
        out.write(f"  {mixin}.executor_type = {cls.__module__}.{cls.__qualname__}\n")
    failed = sorted(t for t, o in result.outcomes.items() if o == "failed")
    sections = [
        (f"failed ({len(failed)})", [f"{t}" for t in failed]),
        (
            f"excluded ({len(excluded)}, counted as skipped)",
            [f"{t}: {r}" for t, r in sorted(excluded.items())],
        ),
        (
            "skipped by the test suite",
            [f"{t}: {r}" for t, r in sorted(result.skip_reasons.items()) if t not in excluded],
        ),
    ]
    for title, lines in sections:
        if lines:
            out.write(f"  {title}:\n" + "".join(f"    {line}\n" for line in lines))
    out.write(
        f"  (the totals include the post-run check {CHECKS_CLASS}.test_no_child_process_left)\n"
    )
    out.write(
        f"conformance: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped\n"
    )
    out.flush()
    return not failed and result.wasSuccessful()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_threads = not args.process
    run_process = args.process or args.all

    mixins: dict[str, type] = {}
    overrides: dict[str, type] = {}
    if run_threads:
        cls = concurrent.futures.ThreadPoolExecutor if args.stdlib else _import_thread_pool()
        mixins[THREAD_MIXIN] = cls
        overrides["ThreadPoolExecutor"] = cls
    if run_process:
        cls = concurrent.futures.ProcessPoolExecutor if args.stdlib else _import_process_pool()
        for method in args.start_method or list(PROCESS_MIXINS):
            mixins[PROCESS_MIXINS[method]] = cls
        overrides["ProcessPoolExecutor"] = cls

    if args.testsuite_dir is not None:
        root = args.testsuite_dir.resolve()
    else:
        root = fetch_testsuite(args.cache_dir.resolve(), args.refresh)
    module_file = _find_module_file(root)
    if module_file is None:
        raise SystemExit(f"conformance: no {MODULE}.py under {root}")
    source = describe_source(root, module_file)

    with tempfile.TemporaryDirectory(prefix="conformance-") as import_dir:
        module, added_paths = load_test_module(module_file, Path(import_dir))
        module.support.verbose = 2 if args.verbose else 0  # silence per-test timings
        missing = [name for name in mixins if not hasattr(module, name)]
        if missing:
            raise SystemExit(f"conformance: {module_file} has no {', '.join(missing)}")
        if args.stdlib:
            patch_child_interpreters(module, {}, added_paths)
        else:
            patch_child_interpreters(module, overrides, added_paths + child_import_paths())
            substitute(module, overrides, mixins)

        excluded: dict[str, str] = {}
        classes = pool_test_classes(module, list(mixins))
        suite = build_suite(classes, args.keywords, not args.stdlib, excluded)
        suite.addTests(unittest.TestLoader().loadTestsFromTestCase(PostRunChecks))
        print(
            f"conformance: {suite.countTestCases()} tests from {len(classes)} classes "
            f"({', '.join(sorted(mixins))}), {len(excluded)} excluded",
            flush=True,
        )

        results: list[RecordingResult] = []
        start = time.monotonic()

        def make_result(stream: Any, descriptions: bool, verbosity: int) -> RecordingResult:
            result = RecordingResult(stream, descriptions, verbosity)
            result.watchdog = watchdog
            results.append(result)
            return result

        def expire(what: str) -> None:
            sys.stderr.write(
                f"\nconformance: TIMEOUT: no progress for {args.timeout:.0f}s in {what}; "
                "tracebacks:\n"
            )
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            alive = live_processes()
            if alive:
                sys.stderr.write(f"processes alive (now killed):\n{TRACKER.describe(alive)}\n")
                kill(alive)
            sys.stderr.flush()
            if results:
                results[0].outcomes[f"TIMEOUT in {what}"] = "failed"
                print_summary(results[0], excluded, time.monotonic() - start, source, mixins)
            os._exit(1)

        watchdog = Watchdog(args.timeout, expire)
        if args.timeout:
            watchdog.start()
        runner = unittest.TextTestRunner(
            stream=sys.stderr,
            verbosity=2 if args.verbose else 1,
            resultclass=make_result,
        )
        watchdog.arm("the module set-up")
        result = runner.run(suite)
        watchdog.disarm()
        elapsed = time.monotonic() - start

    assert isinstance(result, RecordingResult)
    return 0 if print_summary(result, excluded, elapsed, source, mixins) else 1


if __name__ == "__main__":
    sys.exit(main())

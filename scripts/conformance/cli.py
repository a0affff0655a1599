"""Command line: one run (ours or ``--stdlib``), or ``--compare`` (both)."""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import sys
import tempfile
from pathlib import Path

from . import compare
from .loading import (
    CLASS_NAMES,
    MIXINS,
    PROCESS_KINDS,
    child_import_paths,
    load,
    patch_child_interpreters,
    patch_subinterpreters,
    substitute,
)
from .running import RunInfo, run
from .selection import build, kinds_from_args
from .sources import MODULE, TESTSUITE_PACKAGE, locate

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "conformance"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="conformance.py",
        description="Run CPython's concurrent.futures executor tests against "
        "executor_exporter's drop-in classes.",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--threads", action="store_true", help="thread pool tests (default)")
    kind.add_argument("--process", action="store_true", help="process pool tests only")
    kind.add_argument("--all", action="store_true", help="thread and process pool tests")
    parser.add_argument(
        "--start-method",
        action="append",
        choices=sorted(PROCESS_KINDS),
        help="process pool start method (repeatable; default: all three)",
    )
    parser.add_argument(
        "--testsuite-dir",
        type=Path,
        help=f"an extracted {TESTSUITE_PACKAGE}, a test/ dir, or the {MODULE} package or "
        "file itself (default: this Python's own, else Debian's package)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the downloaded package is kept (default: %(default)s, git-ignored)",
    )
    parser.add_argument("--refresh", action="store_true", help="download the package again")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--stdlib",
        action="store_true",
        help="baseline: run against the unmodified stdlib classes",
    )
    mode.add_argument(
        "--compare",
        action="store_true",
        help="run the stdlib baseline, then ours, each in a fresh process, and compare",
    )
    parser.add_argument(
        "--no-exclusions",
        action="store_true",
        help="run the excluded tests too (to see whether an exclusion is still needed)",
    )
    parser.add_argument(
        "-k",
        dest="keywords",
        action="append",
        default=[],
        help="only tests whose id (module.Class.test_method) contains this, or matches this glob",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        # The slowest test takes about 6 s; a CI step gives the whole run 300 s, so a
        # hang must be caught well within that for its tracebacks to be printed.
        default=60.0,
        help="per-test watchdog: dump tracebacks and exit after this many seconds "
        "(0: none; default %(default)s)",
    )
    parser.add_argument("--report", type=Path, help="also write the outcomes to this JSON file")
    parser.add_argument(
        "--list", action="store_true", help="print the selected test ids and kinds; run nothing"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    return parser.parse_args(argv)


def _executor_names() -> list[str]:
    """The executor classes of this Python's concurrent.futures (3 from 3.14)."""
    return [n for n in dict.fromkeys(CLASS_NAMES.values()) if hasattr(concurrent.futures, n)]


def _import_ours() -> dict[str, type]:
    """Our classes by name (from the work tree when the package is not installed)."""
    try:
        module = importlib.import_module("executor_exporter")
    except ImportError:
        sys.path.insert(0, str(REPO / "src"))
        module = importlib.import_module("executor_exporter")
    found = {}
    for name in _executor_names():
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, concurrent.futures.Executor)):
            raise SystemExit(f"conformance: executor_exporter.{name} is not an Executor class")
        found[name] = cls
    return found


def run_one(args: argparse.Namespace) -> int:
    """One run in this process: ours, or the stdlib's with ``--stdlib``."""
    kinds = kinds_from_args(not args.process, args.process or args.all, args.start_method)
    if args.stdlib:
        overrides = {n: getattr(concurrent.futures, n) for n in _executor_names()}
    else:
        overrides = _import_ours()
    source = locate(args.testsuite_dir, args.cache_dir.resolve(), args.refresh)
    print(f"conformance: tests from {source.describe()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="conformance-") as import_dir:
        loaded = load(source, Path(import_dir))
        from test import support

        support.verbose = 2 if args.verbose else 0  # silence per-test timings
        if args.stdlib:
            patch_child_interpreters(loaded, {}, loaded.sys_path)
            patch_subinterpreters(loaded.sys_path)
        else:
            patch_child_interpreters(loaded, overrides, loaded.sys_path + child_import_paths())
            patch_subinterpreters(loaded.sys_path + child_import_paths())
            substitute(loaded, overrides)
        selection = build(
            loaded, kinds, args.keywords, args.stdlib, apply_exclusions=not args.no_exclusions
        )
        types = {}
        for kind, mixin_name in MIXINS.items():
            mixin = loaded.mixin(kind)
            if mixin is not None:
                cls = mixin.executor_type  # type: ignore[attr-defined]
                types[mixin_name] = f"{cls.__module__}.{cls.__qualname__}"
        mode = "stdlib" if args.stdlib else "ours"
        print(
            f"conformance: {selection.suite.countTestCases()} tests from {selection.classes} "
            f"classes of {len(loaded.modules)} modules ({', '.join(sorted(kinds))}), "
            f"{len(selection.excluded)} excluded; {mode} classes",
            flush=True,
        )
        if args.list:
            for tid, kind in selection.kinds.items():
                why = selection.excluded.get(tid)
                print(f"{kind:11} {tid}" + (f"  (excluded: {why})" if why else ""))
            return 0
        info = RunInfo(mode, source.describe(), types, selection)
        ok = run(info, args.timeout, args.verbose, args.report)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.compare:
        return compare.run_compare(raw)
    return run_one(args)

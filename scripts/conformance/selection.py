"""Which tests run: every test class of every test module, by kind of pool.

A test class's kind is the mixin it is built on (``thread``, ``fork``, ``spawn``,
``forkserver``, ``interpreter``).  Classes on no mixin but in ``test_interpreter_pool``
are ``interpreter`` tests too.  Other classes (``FutureTests``,
``FailingInitializerResourcesTest``...) construct pools themselves, if at all: a method
named ``test_<start method>`` belongs to that start method, any other to ``thread``.

Test ids are ``module.Class.test_method`` for the package layout (3.12+), where the module
is the submodule (``test_init``), and ``Class.test_method`` for the single file.
"""

from __future__ import annotations

import concurrent.futures.process
import fnmatch
import inspect
import sys
import types
import unittest
from collections.abc import Iterable
from dataclasses import dataclass

from .loading import MIXINS, PROCESS_KINDS, LoadedTests
from .sources import MODULE

KINDS = tuple(MIXINS)


def _feeder_error_takes_shutdown_lock() -> bool:
    """Whether this Python has gh-125451: its call queue is given the pool's shutdown
    lock, which it takes when a call fails to pickle (the fix gave the wakeup a lock of
    its own and the queue no shutdown lock)."""
    queue = getattr(concurrent.futures.process, "_SafeQueue", None)
    try:
        return "shutdown_lock" in inspect.signature(queue).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Exclusion:
    """A test that cannot pass for a named reason that is not a library bug.

    ``pattern`` is an fnmatch pattern on the test id.  ``present`` says whether the reason
    holds on this interpreter, read off the interpreter itself where it can be (a bug fixed
    in a patch release: a minor version says too little).  ``both`` says it fails with the
    stdlib classes too (environment or test-suite issue), so it is excluded from the
    baseline run as well.
    """

    pattern: str
    reason: str
    present: bool = True
    both: bool = True

    def applies(self, test_id: str, stdlib: bool) -> bool:
        if not self.present:
            return False
        if stdlib and not self.both:
            return False
        return fnmatch.fnmatchcase(test_id, self.pattern)


_GH_125451 = (
    "CPython bug gh-125451, fixed in 3.12.8 and 3.13.1, never in 3.10 and 3.11: the "
    "stdlib pool's feeder thread, failing to pickle a call, takes the shutdown lock that "
    "the manager thread may hold while it joins that thread; the test hangs at random "
    "with the stdlib's own pool too"
)

#: A test is listed here only when it cannot pass for such a reason: a test that fails
#: for any other reason is a library bug and must stay visible.  Both pools subclass the
#: stdlib classes and keep their private attributes (``_threads``, ``_work_queue``,
#: ``_processes``, ``_call_queue``, ``_broken``, ``_max_workers``...), so the tests that
#: read them do apply and are run.
EXCLUDED: list[Exclusion] = [
    # Both submit a call that cannot pickle, then shut the pool down.
    Exclusion(pattern, _GH_125451, present=_feeder_error_takes_shutdown_lock())
    for pattern in ("*.test_shutdown_deadlock_pickle", "*.test_processes_terminate")
]


def test_id(test: unittest.TestCase) -> str:
    cls = type(test)
    module = cls.__module__
    name = f"{cls.__name__}.{test._testMethodName}"
    if module.startswith(f"{MODULE}."):
        return f"{module[len(MODULE) + 1 :]}.{name}"
    return name


def module_label(test: unittest.TestCase) -> str:
    """The test's submodule (``test_init``), or the single file's name."""
    module = type(test).__module__
    if module.startswith(f"{MODULE}."):
        return module[len(MODULE) + 1 :]
    return module if module == MODULE else "post-run"


def class_kind(cls: type, loaded: LoadedTests) -> str | None:
    """The kind of pool a class's tests are about, or None (decided per method)."""
    for kind in KINDS:
        mixin = loaded.mixin(kind)
        if mixin is not None and issubclass(cls, mixin):
            return kind
    if cls.__module__.endswith(".test_interpreter_pool"):
        return "interpreter"
    return None


def method_kind(method: str) -> str:
    """The kind of a test of a class on no mixin (see the module docstring)."""
    for kind in PROCESS_KINDS:
        if method == f"test_{kind}" or method.endswith(f"_{kind}"):
            return kind
    return "thread"


def test_classes(module: types.ModuleType) -> list[type]:
    """Every TestCase class defined in ``module``, by name."""
    return sorted(
        (
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, unittest.TestCase)
            and obj.__module__ == module.__name__
        ),
        key=lambda cls: cls.__name__,
    )


def _matches(test_id: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatchcase(test_id, pattern):
                return True
        elif pattern in test_id:
            return True
    return False


def excluded_reason(test_id: str, stdlib: bool) -> str | None:
    for exclusion in EXCLUDED:
        if exclusion.applies(test_id, stdlib):
            return exclusion.reason
    return None


def _skip(test: unittest.TestCase, reason: str) -> None:
    """Make ``test`` report as skipped without running its setUp."""
    name = test._testMethodName

    def excluded(self: unittest.TestCase) -> None:  # pragma: no cover - never runs
        raise AssertionError("excluded test ran")

    excluded.__unittest_skip__ = True  # type: ignore[attr-defined]
    excluded.__unittest_skip_why__ = f"excluded: {reason}"  # type: ignore[attr-defined]
    setattr(test, name, types.MethodType(excluded, test))


def _import_failure(module: str, error: str) -> unittest.TestCase:
    """A test that fails with a module's import error (so it is not dropped silently)."""

    def test_import(self: unittest.TestCase) -> None:
        self.fail(f"{MODULE}.{module} could not be imported: {error}")

    cls = type("ImportFailure", (unittest.TestCase,), {f"test_{module}": test_import})
    cls.__module__ = f"{MODULE}.{module}"
    return cls(f"test_{module}")


@dataclass
class Selection:
    """The suite, and what was decided about each test."""

    suite: unittest.TestSuite
    kinds: dict[str, str]  # test id -> kind
    excluded: dict[str, str]  # test id -> reason
    classes: int


def build(
    loaded: LoadedTests,
    kinds: set[str],
    keywords: list[str],
    stdlib: bool,
    apply_exclusions: bool = True,
) -> Selection:
    """The tests of the given kinds, module by module (so that each module's fixtures run
    once), excluded ones marked skipped with their reason."""
    loader = unittest.TestLoader()
    selection = Selection(unittest.TestSuite(), {}, {}, 0)
    for module in loaded.modules:
        tests: list[tuple[int, str, unittest.TestCase]] = []
        for cls in test_classes(module):
            cls_kind = class_kind(cls, loaded)
            counted = False
            for test in loader.loadTestsFromTestCase(cls):
                assert isinstance(test, unittest.TestCase)
                kind = cls_kind or method_kind(test._testMethodName)
                tid = test_id(test)
                if kind not in kinds or (keywords and not _matches(tid, keywords)):
                    continue
                counted = True
                reason = excluded_reason(tid, stdlib) if apply_exclusions else None
                if reason is not None:
                    selection.excluded[tid] = reason
                    _skip(test, reason)
                selection.kinds[tid] = kind
                tests.append((KINDS.index(kind), tid, test))
            selection.classes += counted
        # Threads first, then fork, spawn, forkserver: one module at a time.
        selection.suite.addTests(test for _, _, test in sorted(tests, key=lambda t: t[:2]))
    for name, error in sorted(loaded.unimportable.items()):
        tid = f"{name}.*"
        if error.startswith("SkipTest"):
            # As CPython's runner reports it: the module skips itself on this build
            # (test_interpreter_pool without sub-interpreter support, say).
            selection.excluded[tid] = f"the module skips itself here ({error})"
        elif not keywords or _matches(tid, keywords):
            test = _import_failure(name, error)
            selection.kinds[test_id(test)] = "thread"
            selection.suite.addTest(test)
    return selection


def kinds_from_args(threads: bool, process: bool, start_methods: list[str] | None) -> set[str]:
    """``--threads`` (default): thread and interpreter pools; ``--process``: the start
    methods; both with ``--all``."""
    kinds: set[str] = set()
    if threads:
        kinds |= {"thread", "interpreter"}
    if process:
        kinds |= set(start_methods or PROCESS_KINDS)
    if not kinds:  # pragma: no cover - argparse makes one of them true
        sys.exit("conformance: nothing selected")
    return kinds

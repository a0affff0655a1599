"""Importing the test modules and putting our classes where they look for executors.

The tests are copied into a temporary directory and imported under the top-level name
``test_concurrent_futures``: the package's modules import each other relatively
(``from .util import ...``), so the package works under any name, and a top-level name
works for every source (the running Python's own tests and Debian's extracted copy
alike).  That directory goes first on ``sys.path`` before any worker starts, so spawn
and forkserver workers (which get the parent's ``sys.path``) can unpickle the test
modules' functions.  ``test.support`` is the running interpreter's own.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import pkgutil
import re
import shutil
import sys
import sysconfig
import types
import unittest
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import MODULE, TestSource

#: Kind of pool -> the mixin of the test suite that sets ``executor_type`` for it.
MIXINS = {
    "thread": "ThreadPoolMixin",
    "fork": "ProcessPoolForkMixin",
    "spawn": "ProcessPoolSpawnMixin",
    "forkserver": "ProcessPoolForkserverMixin",
    "interpreter": "InterpreterPoolMixin",  # 3.14+
}
#: Kind of pool -> the name of its class in concurrent.futures.
CLASS_NAMES = {
    "thread": "ThreadPoolExecutor",
    "fork": "ProcessPoolExecutor",
    "spawn": "ProcessPoolExecutor",
    "forkserver": "ProcessPoolExecutor",
    "interpreter": "InterpreterPoolExecutor",
}
PROCESS_KINDS = ("fork", "spawn", "forkserver")
#: Mixins every supported version has (the interpreter pool's is optional).
REQUIRED_KINDS = ("thread", *PROCESS_KINDS)


@dataclass
class LoadedTests:
    """The imported test modules of one source."""

    source: TestSource
    util: types.ModuleType  # where the mixins live (the module itself for a single file)
    modules: list[types.ModuleType]  # the modules holding tests, in run order
    unimportable: dict[str, str] = field(default_factory=dict)  # module -> error
    sys_path: list[str] = field(default_factory=list)  # added; child interpreters need it

    def mixin(self, kind: str) -> type | None:
        found = getattr(self.util, MIXINS[kind], None)
        return found if isinstance(found, type) else None

    def all_modules(self) -> list[types.ModuleType]:
        """Every module of the source, helpers included (``util``, ``executor``...)."""
        prefix = f"{MODULE}."
        names = sorted(n for n in sys.modules if n == MODULE or n.startswith(prefix))
        return [sys.modules[n] for n in names]


def _require_test_support() -> None:
    try:
        importlib.import_module("test.support.script_helper")
    except ImportError as exc:
        raise SystemExit(
            f"conformance: this Python has no usable test.support ({exc}); use one that "
            "ships its test package (pyenv and python.org builds do, Debian's in "
            "libpython3.X-stdlib)"
        ) from None


def _older_test_support() -> None:
    """Let a newer patch release's tests run on an older interpreter's ``test.support``.

    The only gap met so far: Ubuntu's 3.12.3 tests (the 3.12 suite obtainable here) call
    ``check_sanitizer(thread=True)``, a keyword 3.12.3 added; pyenv's 3.12.1 lacks it.
    The stand-in answers it as 3.12.3 does (is the build made with ``-fsanitize=thread``?)
    and hands every other keyword to the interpreter's own function.
    """
    from test import support

    check = support.check_sanitizer
    if "thread" in inspect.signature(check).parameters:
        return

    def check_sanitizer(*, thread: bool = False, **others: bool) -> bool:
        flags = " ".join(
            str(sysconfig.get_config_var(name) or "") for name in ("CONFIG_ARGS", "PY_CFLAGS")
        )
        found = thread and "-fsanitize=thread" in flags
        return found or (bool(any(others.values())) and check(**others))

    support.check_sanitizer = check_sanitizer


def load(source: TestSource, import_dir: Path) -> LoadedTests:
    """Copy the tests into ``import_dir``, import them, return the modules."""
    _require_test_support()
    _older_test_support()
    if source.is_package:
        shutil.copytree(
            source.path, import_dir / MODULE, ignore=shutil.ignore_patterns("__pycache__")
        )
    else:
        shutil.copy2(source.path, import_dir / f"{MODULE}.py")
    added = [str(import_dir)]
    sys.path[:0] = added
    try:
        top = importlib.import_module(MODULE)
    except unittest.SkipTest as exc:
        raise SystemExit(f"conformance: the test module skips itself here: {exc}") from None
    if not source.is_package:
        return LoadedTests(source, top, [top], sys_path=added)

    util = importlib.import_module(f"{MODULE}.util")
    loaded = LoadedTests(source, util, [], sys_path=added)
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(import_dir / MODULE)])
        if info.name.startswith("test_")
    )
    for name in names:
        try:
            loaded.modules.append(importlib.import_module(f"{MODULE}.{name}"))
        except (ImportError, unittest.SkipTest) as exc:
            # Reported by the selection (as excluded or failed), never dropped silently.
            loaded.unimportable[name] = f"{type(exc).__name__}: {exc}"
    missing = [MIXINS[k] for k in REQUIRED_KINDS if loaded.mixin(k) is None]
    if missing:
        raise SystemExit(f"conformance: {source.path} has no {', '.join(missing)}")
    return loaded


# -- substitution -----------------------------------------------------------------------


class FuturesView(types.ModuleType):
    """``concurrent.futures`` as a test module sees it, with our classes in it."""

    def __init__(self, overrides: dict[str, type]) -> None:
        super().__init__(concurrent.futures.__name__, concurrent.futures.__doc__)
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(concurrent.futures, name)


def substitute(loaded: LoadedTests, overrides: dict[str, type]) -> tuple[type, ...]:
    """Put our classes wherever the test modules look for executor classes.

    * the mixins' ``executor_type`` (every pool test class inherits it);
    * each module's ``futures`` (``concurrent.futures``) becomes a ``FuturesView``, for
      the tests that construct ``futures.ProcessPoolExecutor(...)`` themselves;
    * names bound to a stdlib class (``from concurrent.futures import X``).

    Returns our classes, which every executor a pool test starts from must be.
    """
    for kind, class_name in CLASS_NAMES.items():
        mixin = loaded.mixin(kind)
        if mixin is not None:  # every kind but the interpreter pool's (3.14+) has one
            mixin.executor_type = overrides[class_name]  # type: ignore[attr-defined]
    view = FuturesView(overrides)
    stdlib = {getattr(concurrent.futures, name): cls for name, cls in overrides.items()}
    for module in loaded.all_modules():
        for name, value in list(vars(module).items()):
            if value is concurrent.futures:
                setattr(module, name, view)
            elif isinstance(value, type) and value in stdlib:
                setattr(module, name, stdlib[value])
    expected = tuple(overrides.values())
    _check_executors(loaded.util, expected)
    return expected


def _check_executors(util: types.ModuleType, expected: tuple[type, ...]) -> None:
    """Make ``ExecutorMixin.setUp`` fail if the executor it made is not one of ours."""
    mixin_base = util.ExecutorMixin
    setup = mixin_base.setUp

    def checked_setup(self: Any) -> None:
        setup(self)
        executor = getattr(self, "executor", None)
        if executor is not None and not isinstance(executor, expected):
            raise AssertionError(f"substitution failed: executor is {type(executor)!r}")

    mixin_base.setUp = checked_setup


# -- child interpreters -----------------------------------------------------------------

_FROM_FUTURES = re.compile(r"\bfrom\s+concurrent\.futures\s+import\s+(\w+)")


def rewrite_child_code(code: str, overrides: dict[str, type], sys_path: list[str]) -> str:
    """Make code run by a fresh interpreter use our classes and find the test modules."""

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


def _rewriting(
    run: Callable[..., Any], overrides: dict[str, type], sys_path: list[str]
) -> Callable[..., Any]:
    """Wrap ``assert_python_ok``-like helpers so that their ``-c`` code is rewritten."""

    def wrapper(*args: Any, **env_vars: Any) -> Any:
        argv = list(args)
        if "-c" in argv:
            i = argv.index("-c") + 1
            argv[i] = rewrite_child_code(argv[i], overrides, sys_path)
        return run(*argv, **env_vars)

    return wrapper


_HELPERS = ("assert_python_ok", "assert_python_failure")


def patch_child_interpreters(
    loaded: LoadedTests, overrides: dict[str, type], sys_path: list[str]
) -> None:
    """Rewrite the code that tests run in a fresh interpreter (``script_helper``)."""
    from test.support import script_helper

    helper_view = types.ModuleType(script_helper.__name__, script_helper.__doc__)
    helper_view.__dict__.update(vars(script_helper))
    for name in _HELPERS:
        setattr(helper_view, name, _rewriting(getattr(script_helper, name), overrides, sys_path))
    for module in loaded.all_modules():
        for name, value in list(vars(module).items()):
            if value is script_helper:
                setattr(module, name, helper_view)
            elif name in _HELPERS and value is getattr(script_helper, name):
                setattr(module, name, getattr(helper_view, name))


def patch_subinterpreters(sys_path: list[str]) -> None:
    """Give every new sub-interpreter (3.14+) the import path of the test modules.

    A sub-interpreter starts from the process's initial ``sys.path``, not the main
    interpreter's current one, so the copied tests are not importable there and every
    function an ``InterpreterPoolExecutor`` test sends over fails to unpickle. CPython's
    own run does not meet this: its tests sit in the stdlib's ``test`` package.  Both the
    stdlib's pool and ours create their workers through ``concurrent.interpreters.create``.
    """
    try:
        from concurrent import interpreters  # type: ignore[attr-defined]
    except ImportError:
        return
    create = interpreters.create
    if getattr(create, "_conformance_sys_path", None) is not None:
        return

    def create_with_path() -> Any:
        interp = create()
        interp.exec(f"import sys; sys.path[:0] = {sys_path!r}")
        return interp

    create_with_path._conformance_sys_path = sys_path  # type: ignore[attr-defined]
    interpreters.create = create_with_path


def child_import_paths() -> list[str]:
    """Where a fresh ``-I`` interpreter finds executor_exporter (if not site-installed)."""
    import executor_exporter

    return [str(Path(executor_exporter.__file__).resolve().parents[1])]

"""The public-API path: what the pools do on a Python whose internals we do not know.

Each behaviour test takes that path both ways it is reached, on every version the suite
runs on: with ``executor_exporter._stdlib.KNOWN`` forced to False, as it would be on
tomorrow's 3.16 or on a patch release that moved a private name, and with the user's
``EXECUTOR_EXPORTER_FALLBACK=1``.  The pools must then still behave like the stdlib's,
warn once (on an unknown layout only), and keep every number true.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import sys
import warnings
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import proc_tasks as t
from executor_exporter import ProcessPoolExecutor, ThreadPoolExecutor, _stdlib
from helpers import assert_invariants, wait_until

METHODS = ["fork", "spawn", "forkserver"]
TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def no_fallback_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_stdlib.FALLBACK_ENV, raising=False)


@pytest.fixture(params=["unknown-layout", "env-forced"])
def public_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The public-API path, as an unknown interpreter or the user's variable reaches it."""
    if request.param == "unknown-layout":
        monkeypatch.setattr(_stdlib, "KNOWN", False)
        monkeypatch.setattr(_stdlib, "_warned", True)  # the warning has its own test
    else:
        monkeypatch.setenv(_stdlib.FALLBACK_ENV, "1")


@pytest.fixture(params=METHODS)
def ctx(request: pytest.FixtureRequest) -> mp.context.BaseContext:
    return mp.get_context(request.param)


def settled(pool: Any, **expected: int) -> Any:
    """Stats once they show ``expected`` (a process pool's results arrive later)."""
    wait_until(
        lambda: all(getattr(pool.stats(), k) == v for k, v in expected.items()),
        timeout=TIMEOUT,
    )
    return pool.stats()


def test_warns_once_naming_the_version(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    monkeypatch.setattr(_stdlib, "KNOWN", False)
    monkeypatch.setattr(_stdlib, "_warned", False)
    version = ".".join(map(str, sys.version_info[:3]))
    with pytest.warns(RuntimeWarning, match=f"Python {version}") as record:
        ThreadPoolExecutor(1, registry=registry).shutdown()
    assert len(record) == 1
    assert record[0].filename == __file__  # points at the line that made the pool
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProcessPoolExecutor(1, registry=registry).shutdown()  # not again


def test_known_here() -> None:
    # Every version the suite runs on is one whose internals were read: should this
    # fail, a new interpreter or patch release moved something (see _stdlib).
    assert _stdlib._layout_is_known(), sys.version


class _FutureWithoutFields:
    """A Future of a layout that renamed its private fields."""


class _FutureWithTupleCallbacks:
    _state = _exception = None
    _done_callbacks = ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHECKED_VERSIONS", ((3, 9),)),
        ("CallItem", None),
        ("process_chunk", None),
        ("Future", _FutureWithoutFields),
        ("Future", _FutureWithTupleCallbacks),
    ],
    ids=["version", "CallItem", "process_chunk", "future-fields", "future-callbacks"],
)
def test_each_moved_name_makes_the_layout_unknown(
    monkeypatch: pytest.MonkeyPatch, name: str, value: Any
) -> None:
    monkeypatch.setattr(_stdlib, name, value)
    assert not _stdlib._layout_is_known()


def test_pool_settings_when_the_attributes_moved() -> None:
    """What the pools read back from the stdlib constructor, when the attributes that hold
    it are gone: the stdlib's own defaults, or what the caller gave."""
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    bare_process = cf.ProcessPoolExecutor.__new__(cf.ProcessPoolExecutor)
    bare_thread = cf.ThreadPoolExecutor.__new__(cf.ThreadPoolExecutor)
    assert _stdlib.max_workers(bare_process) == cpus
    assert _stdlib.max_workers(bare_thread) == min(32, cpus + 4)
    spawn, fork = mp.get_context("spawn"), mp.get_context("fork")
    assert _stdlib.mp_context(bare_process, fork, None) is fork
    assert _stdlib.mp_context(bare_process, None, 3) is spawn
    assert _stdlib.mp_context(bare_process, None, None) is mp.get_context()


@pytest.mark.usefixtures("public_api")
def test_thread_pool(registry: CollectorRegistry) -> None:
    with ThreadPoolExecutor(2, registry=registry) as pool:
        assert pool.submit(pow, 2, 5).result() == 32
        assert list(pool.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result()
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed) == (7, 6, 1)
    assert_invariants(s)


@pytest.mark.usefixtures("public_api")
def test_process_pool_submit_and_map(
    ctx: mp.context.BaseContext, registry: CollectorRegistry
) -> None:
    with ProcessPoolExecutor(2, mp_context=ctx, registry=registry) as pool:
        assert pool.submit(t.add, 1, 2, z=3).result(TIMEOUT) == 6
        assert list(pool.map(t.square, range(10), chunksize=3)) == [x * x for x in range(10)]
        with pytest.raises(ValueError, match="bad item 7"):
            list(pool.map(t.raise_at, range(10), chunksize=4))
        with pytest.raises(ValueError, match=r"chunksize must be >= 1\."):
            pool.map(t.square, range(3), chunksize=0)
    # Every map item is a task, chunks or not; the failing map's later items may have
    # run or been cancelled, as with the stdlib.
    s = settled(pool, queued=0, running=0)
    assert s.submitted == 1 + 10 + 10
    assert s.failed >= 1
    assert s.completed >= 11
    assert_invariants(s)
    text = generate_latest(registry).decode()
    assert "python_executor_submitted_tasks_total" in text


def _yielded(pool: cf.Executor, chunksize: int) -> tuple[list[int], str]:
    out: list[int] = []
    try:
        for x in pool.map(t.raise_at, range(12), chunksize=chunksize):
            out.append(x)
    except ValueError as exc:
        return out, str(exc)
    return out, ""


@pytest.mark.parametrize("chunksize", [1, 3, 4])
@pytest.mark.usefixtures("public_api")
def test_process_map_yields_what_the_stdlib_yields(
    chunksize: int, registry: CollectorRegistry
) -> None:
    # A failing chunk loses its items that ran before the failure, as with the stdlib:
    # chunks cross whole on this path too, they are not sent item by item.
    ctx = mp.get_context("fork")
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as std:
        expected = _yielded(std, chunksize)
    with ProcessPoolExecutor(2, mp_context=ctx, registry=registry) as pool:
        assert _yielded(pool, chunksize) == expected
    s = settled(pool, queued=0, running=0)
    assert s.submitted == 12
    # The failing item, and the items after it in its chunk, which never ran; the
    # chunk's earlier items completed in the worker.
    assert s.failed == (7 // chunksize + 1) * chunksize - 7
    assert s.completed + s.cancelled + s.failed == 12
    assert_invariants(s, never_started=s.failed - 1)


@pytest.mark.usefixtures("public_api")
def test_process_pool_faults(registry: CollectorRegistry) -> None:
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), registry=registry)
    with pytest.raises(Exception, match="local object"):
        pool.submit(t.square, lambda: 1).result(TIMEOUT)  # the argument does not pickle
    pid = pool.submit(t.getpid).result(TIMEOUT)
    started = pool.submit(t.sleep_return, 60.0)
    wait_until(lambda: pool.stats().running == 1, timeout=TIMEOUT)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(cf.process.BrokenProcessPool):
        started.result(TIMEOUT)
    with pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(t.square, 2)
    pool.shutdown()
    s = settled(pool, queued=0, running=0, failed=2)
    assert (s.submitted, s.completed, s.rejected_broken) == (3, 1, 1)
    assert_invariants(s, never_started=1)  # the call whose argument did not pickle


@pytest.mark.usefixtures("public_api")
def test_process_pool_cancel(registry: CollectorRegistry, tmp_path: Any) -> None:
    release = tmp_path / "release"
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), registry=registry)
    blocker = pool.submit(t.wait_for_file, str(release))
    queued = [pool.submit(t.square, i) for i in range(5)]
    wait_until(lambda: pool.stats().running == 1, timeout=TIMEOUT)
    pool.shutdown(wait=False, cancel_futures=True)
    release.touch()
    assert blocker.result(TIMEOUT) == str(release)
    cancelled = sum(f.cancelled() for f in queued)
    s = settled(pool, queued=0, running=0, cancelled=cancelled)
    assert s.completed + s.cancelled == 6
    assert_invariants(s)


# -- EXECUTOR_EXPORTER_FALLBACK -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "known"),
    [("1", False), (" TRUE ", False), ("on", False), ("0", True), ("", True), ("no", True)],
)
def test_the_variable_chooses_the_path(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, value: str, known: bool
) -> None:
    # Read when a pool is made, not at import: a pool made later follows a new value.
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chosen fallback says nothing
        pool = ProcessPoolExecutor(1, registry=registry)
        pool.shutdown()
    assert pool._ee_known is known


@pytest.mark.parametrize("value", ["2", "maybe", "fallback"])
def test_a_value_that_is_neither_yes_nor_no_is_refused(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, value: str
) -> None:
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, value)
    for make in (ThreadPoolExecutor, ProcessPoolExecutor):
        with pytest.raises(ValueError, match=f"EXECUTOR_EXPORTER_FALLBACK='{value}'.*set it to 1"):
            make(1, registry=registry)


@pytest.mark.parametrize(
    ("value", "module"), [("1", "concurrent.futures.process"), ("0", "executor_exporter._child")]
)
def test_the_workers_follow_their_parent(
    ctx: mp.context.BaseContext,
    monkeypatch: pytest.MonkeyPatch,
    registry: CollectorRegistry,
    value: str,
    module: str,
) -> None:
    """The workers' side of the fast path (our ``_CallItem``) is installed only when the
    parent takes it; a forkserver started before the variable was set does not matter."""
    monkeypatch.setenv(_stdlib.FALLBACK_ENV, value)
    with ProcessPoolExecutor(1, mp_context=ctx, registry=registry) as pool:
        assert pool.submit(t.call_item_class).result(TIMEOUT) == f"{module}._CallItem"
        assert pool.submit(t.square, 4).result(TIMEOUT) == 16
    s = settled(pool, completed=2)
    assert s.submitted == 2
    assert_invariants(s)


def test_the_documented_filter_silences_the_warning(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    # The README's line, as `python -W` and PYTHONWARNINGS take it.
    monkeypatch.setattr(_stdlib, "KNOWN", False)
    monkeypatch.setattr(_stdlib, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings._setoption("ignore:executor_exporter does not know:RuntimeWarning")  # type: ignore[attr-defined]
        ThreadPoolExecutor(1, registry=registry).shutdown()

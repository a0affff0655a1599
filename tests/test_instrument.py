"""instrument() / uninstrument(): pools made by code we don't own, asyncio's default executor."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import concurrent.futures.process as cfp
import concurrent.futures.thread as cft
import importlib.util
import multiprocessing as mp
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import executor_exporter
import proc_tasks
from executor_exporter import (
    instrument,
    instrument_asyncio,
    is_instrumented,
    uninstrument,
)
from helpers import THREAD_TYPE, has_series, sample

PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"
SUBMITTED = "python_executor_submitted_tasks_total"
COMPLETED = "python_executor_tasks_duration_seconds_count"

# The stdlib classes, read while nothing is instrumented.
STD_THREAD = cft.ThreadPoolExecutor
STD_PROCESS = cfp.ProcessPoolExecutor
# (module, attribute) pairs that instrument() replaces.
TARGETS = [
    (cf, "ThreadPoolExecutor"),
    (cf, "ProcessPoolExecutor"),
    (cft, "ThreadPoolExecutor"),
    (cfp, "ProcessPoolExecutor"),
]
_MISSING = object()


def _snapshot() -> list[object]:
    return [vars(module).get(name, _MISSING) for module, name in TARGETS]


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    """Every test starts and ends uninstrumented, with the modules as they were."""
    assert not is_instrumented()
    before = _snapshot()
    yield
    uninstrument()
    assert not is_instrumented()
    assert _snapshot() == before


def load(tmp_path: Path, name: str, source: str) -> ModuleType:
    """Import ``source`` as a fresh module: a stand-in for a third-party library."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def submitted(registry: CollectorRegistry, executor: str, kind: str = THREAD_TYPE) -> float | None:
    return sample(registry, SUBMITTED, executor, kind)


def completed(registry: CollectorRegistry, executor: str, kind: str = THREAD_TYPE) -> float | None:
    return sample(registry, COMPLETED, executor, kind, result="completed")


def _double(x: int) -> int:
    return 2 * x


# -- nothing at import; the patch and its undoing -----------------------------------------


def test_import_changes_nothing() -> None:
    code = (
        "import concurrent.futures as cf, concurrent.futures.thread as t\n"
        "import concurrent.futures.process as p\n"
        "import executor_exporter, executor_exporter.instrumentation\n"
        "assert not executor_exporter.is_instrumented()\n"
        "assert cf.ThreadPoolExecutor is t.ThreadPoolExecutor\n"
        "assert cf.ProcessPoolExecutor is p.ProcessPoolExecutor\n"
        "assert type(t.ThreadPoolExecutor) is type and type(p.ProcessPoolExecutor) is type\n"
        "assert t.ThreadPoolExecutor.__module__ == 'concurrent.futures.thread'\n"
        "assert 'asyncio' not in __import__('sys').modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_instrument_replaces_every_attribute_and_uninstrument_restores_them() -> None:
    before = _snapshot()
    instrument()
    assert is_instrumented()
    thread, process = cf.ThreadPoolExecutor, cf.ProcessPoolExecutor
    assert thread is not STD_THREAD and process is not STD_PROCESS
    assert cft.ThreadPoolExecutor is thread and cfp.ProcessPoolExecutor is process
    assert issubclass(thread, executor_exporter.ThreadPoolExecutor)
    assert issubclass(process, executor_exporter.ProcessPoolExecutor)
    assert STD_THREAD in thread.__mro__ and STD_PROCESS in process.__mro__
    # Named like the stdlib classes, so executor_type does not change; repr tells.
    assert (thread.__module__, thread.__qualname__) == (
        "concurrent.futures.thread",
        "ThreadPoolExecutor",
    )
    assert "instrumented" in repr(thread) and "instrumented" in repr(process)
    uninstrument()
    assert not is_instrumented()
    assert _snapshot() == before
    assert cf.ThreadPoolExecutor is STD_THREAD and cf.ProcessPoolExecutor is STD_PROCESS
    assert cft.ThreadPoolExecutor is STD_THREAD and cfp.ProcessPoolExecutor is STD_PROCESS


def test_instrument_twice_is_one_patch_and_uninstrument_twice_is_fine() -> None:
    registry = CollectorRegistry()
    instrument(registry=registry, thread_id="t")
    first = (cf.ThreadPoolExecutor, cf.ProcessPoolExecutor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        instrument(registry=registry, thread_id="t")  # same arguments: silent no-op
    assert (cf.ThreadPoolExecutor, cf.ProcessPoolExecutor) == first
    with pytest.warns(RuntimeWarning, match="already instrumented"):
        instrument(registry=CollectorRegistry(), thread_id="other")
    assert (cf.ThreadPoolExecutor, cf.ProcessPoolExecutor) == first
    with cf.ThreadPoolExecutor(1) as pool:
        pool.submit(_double, 1).result()
    assert submitted(registry, "t") == 1  # the first call's arguments hold
    uninstrument()
    uninstrument()
    assert cf.ThreadPoolExecutor is STD_THREAD
    # Instrumenting again after undoing works, with new stand-ins.
    instrument(registry=registry)
    assert cf.ThreadPoolExecutor is not STD_THREAD and cf.ThreadPoolExecutor is not first[0]


def test_concurrent_instrument_calls_patch_once() -> None:
    barrier = threading.Barrier(8)
    seen: list[Any] = []

    def call() -> None:
        barrier.wait()
        instrument()
        seen.append(cf.ThreadPoolExecutor)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1
    uninstrument()
    assert cf.ThreadPoolExecutor is STD_THREAD


@pytest.mark.skipif(
    not hasattr(cf, "__getattr__"), reason="3.15 binds both names with lazy imports instead"
)
def test_lazy_package_attribute_is_removed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Up to 3.14 concurrent.futures loads both classes lazily, through a module __getattr__.
    monkeypatch.delattr(cf, "ThreadPoolExecutor")
    monkeypatch.delattr(cf, "ProcessPoolExecutor")
    assert "ThreadPoolExecutor" not in vars(cf)
    instrument()
    stand_in = vars(cf)["ThreadPoolExecutor"]
    assert stand_in is cft.ThreadPoolExecutor and stand_in is not STD_THREAD
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    assert ThreadPoolExecutor is stand_in and ProcessPoolExecutor is cfp.ProcessPoolExecutor
    uninstrument()
    assert "ThreadPoolExecutor" not in vars(cf) and "ProcessPoolExecutor" not in vars(cf)
    assert cf.ThreadPoolExecutor is STD_THREAD  # the lazy __getattr__ again
    assert cf.ProcessPoolExecutor is STD_PROCESS


def test_lazy_import_bindings_are_put_back_as_they_were() -> None:
    # 3.15 binds the classes with `lazy from .thread import ...`: the module dict holds a
    # lazy object until the name is first used.  uninstrument() puts back whatever the
    # dict held, reified or not, and the name still resolves to the stdlib class.
    held = {name: vars(cf).get(name) for name in ("ThreadPoolExecutor", "ProcessPoolExecutor")}
    instrument()
    uninstrument()
    after = {name: vars(cf).get(name) for name in held}
    assert all(after[name] is held[name] for name in held), (held, after)
    assert cf.ThreadPoolExecutor is STD_THREAD
    assert cf.ProcessPoolExecutor is STD_PROCESS


@pytest.mark.parametrize(
    "kwargs",
    [{"thread_id": 1}, {"process_id": b"x"}, {"registry": "registry"}],
)
def test_bad_arguments_patch_nothing(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        instrument(**kwargs)
    assert not is_instrumented()
    assert cf.ThreadPoolExecutor is STD_THREAD


# -- third-party code gets instrumented pools ---------------------------------------------


def test_module_attribute_call_after_instrument(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    with cf.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(_double, range(5))) == [0, 2, 4, 6, 8]
        assert pool.submit(_double, 21).result() == 42
    assert isinstance(pool, STD_THREAD)
    assert isinstance(pool, executor_exporter.ThreadPoolExecutor)
    assert submitted(registry, "") == 6
    assert completed(registry, "") == 6


def test_from_import_after_instrument(tmp_path: Path, registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    lib = load(
        tmp_path,
        "thirdparty_after",
        """
        import concurrent.futures as cf
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures.thread import ThreadPoolExecutor as Direct

        def run(fn):
            with ThreadPoolExecutor(2) as a, cf.ThreadPoolExecutor(2) as b, Direct(1) as c:
                futures = [a.submit(fn, 1), b.submit(fn, 2), c.submit(fn, 3)]
                return [f.result() for f in futures]
        """,
    )
    assert lib.run(_double) == [2, 4, 6]
    assert submitted(registry, "") == 3
    assert completed(registry, "") == 3


def test_imported_before_instrument_keeps_the_stdlib_class(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    lib = load(
        tmp_path,
        "thirdparty_before",
        """
        from concurrent.futures import ThreadPoolExecutor

        def run(fn):
            with ThreadPoolExecutor(2) as pool:
                return pool.submit(fn, 1).result()
        """,
    )
    instrument(registry=registry)
    assert lib.ThreadPoolExecutor is STD_THREAD  # the documented limit
    assert lib.run(_double) == 2
    assert not has_series(registry, "")


def test_subclasses_before_and_during_instrument(registry: CollectorRegistry) -> None:
    class Before(cf.ThreadPoolExecutor):
        pass

    instrument(registry=registry, thread_id="sub")

    class During(cf.ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(1)

    with Before(1) as a, During() as b:
        a.submit(_double, 1).result()
        b.submit(_double, 1).result()
    assert submitted(registry, "sub") == 1  # During only
    with STD_THREAD(1) as plain:
        assert not isinstance(plain, During)  # a subclass of a stand-in checks as usual
        assert isinstance(plain, cf.ThreadPoolExecutor)
    assert not issubclass(STD_THREAD, During) and issubclass(During, cf.ThreadPoolExecutor)
    assert repr(During).startswith("<class '") and "instrumented" not in repr(During)
    uninstrument()
    with During() as c:  # defined while instrumented: stays instrumented
        c.submit(_double, 1).result()
    assert submitted(registry, "sub") == 2


def test_process_pool_fork(tmp_path: Path, registry: CollectorRegistry) -> None:
    instrument(registry=registry, process_id="procs")
    lib = load(
        tmp_path,
        "thirdparty_proc",
        """
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        import proc_tasks

        def run():
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(2, mp_context=ctx) as pool:
                out = list(pool.map(proc_tasks.square, range(10), chunksize=3))
                out.append(pool.submit(proc_tasks.add, 1, 2).result())
            return pool, out
        """,
    )
    pool, out = lib.run()
    assert out == [x * x for x in range(10)] + [3]
    assert isinstance(pool, STD_PROCESS) and isinstance(pool, cf.ProcessPoolExecutor)
    assert pool.executor_id == "procs"
    assert submitted(registry, "procs", PROCESS_TYPE) == 11
    assert completed(registry, "procs", PROCESS_TYPE) == 11


def test_process_pool_spawn_children_need_no_instrumentation(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx, executor_id="spawned") as pool:
        assert pool.submit(proc_tasks.square, 9).result() == 81
    assert submitted(registry, "spawned", PROCESS_TYPE) == 1
    assert completed(registry, "spawned", PROCESS_TYPE) == 1


# -- ids and registries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument_kwargs", "pool_kwargs", "expected"),
    [
        ({}, {}, ""),
        ({"thread_id": "libs"}, {}, "libs"),
        ({"thread_id": "libs"}, {"thread_name_prefix": "fetch"}, "fetch"),
        ({}, {"thread_name_prefix": "fetch"}, "fetch"),
        ({"thread_id": "libs"}, {"thread_name_prefix": "fetch", "executor_id": "mine"}, "mine"),
        ({}, {"thread_name_prefix": "fetch", "exporter_id": "alias"}, "alias"),
        ({"thread_id": "libs"}, {"executor_id": ""}, ""),
    ],
)
def test_thread_pool_id(
    registry: CollectorRegistry,
    instrument_kwargs: dict[str, str],
    pool_kwargs: dict[str, str],
    expected: str,
) -> None:
    instrument(registry=registry, **instrument_kwargs)
    with cf.ThreadPoolExecutor(1, **pool_kwargs) as pool:
        pool.submit(_double, 1).result()
    assert pool.executor_id == expected
    assert submitted(registry, expected) == 1


def test_thread_name_prefix_given_positionally(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    with cf.ThreadPoolExecutor(1, "positional") as pool:
        name = pool.submit(lambda: threading.current_thread().name).result()
    assert name.startswith("positional_")
    assert pool.executor_id == "positional"


def test_process_pool_id(registry: CollectorRegistry) -> None:
    instrument(registry=registry, thread_id="t", process_id="p")
    ctx = mp.get_context("fork")
    with (
        cf.ProcessPoolExecutor(1, mp_context=ctx) as default,
        cf.ProcessPoolExecutor(1, mp_context=ctx, executor_id="explicit") as explicit,
    ):
        pass
    assert default.executor_id == "p" and explicit.executor_id == "explicit"


def test_registry_given_to_a_pool_wins(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    instrument(registry=registry)
    with cf.ThreadPoolExecutor(1, executor_id="x", registry=other) as pool:
        pool.submit(_double, 1).result()
    assert submitted(other, "x") == 1
    assert not has_series(registry, "x")


# -- our drop-ins and the stdlib's own checks keep working --------------------------------


def test_drop_ins_after_instrument_are_counted_once(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    with executor_exporter.ThreadPoolExecutor(2, executor_id="own", registry=registry) as pool:
        for f in [pool.submit(_double, i) for i in range(4)]:
            f.result()
    assert type(pool) is executor_exporter.ThreadPoolExecutor
    assert pool.stats().submitted == 4
    assert submitted(registry, "own") == 4  # same executor_type label as before
    ctx = mp.get_context("fork")
    with executor_exporter.ProcessPoolExecutor(
        1, mp_context=ctx, executor_id="ownp", registry=registry
    ) as ppool:
        assert ppool.submit(proc_tasks.square, 3).result() == 9
    assert submitted(registry, "ownp", PROCESS_TYPE) == 1


def test_isinstance_against_the_stand_ins_is_as_against_the_stdlib() -> None:
    plain = STD_THREAD(1)
    own = executor_exporter.ThreadPoolExecutor(1, registry=CollectorRegistry())
    try:
        instrument(registry=CollectorRegistry())
        assert isinstance(plain, cf.ThreadPoolExecutor)
        assert isinstance(own, cf.ThreadPoolExecutor)
        assert issubclass(STD_THREAD, cf.ThreadPoolExecutor)
        assert issubclass(executor_exporter.ThreadPoolExecutor, cf.ThreadPoolExecutor)
        assert not isinstance(plain, cf.ProcessPoolExecutor)
        assert issubclass(STD_PROCESS, cf.ProcessPoolExecutor)
        assert not issubclass(STD_THREAD, cf.ProcessPoolExecutor)
        with cf.ThreadPoolExecutor(1) as instrumented:
            assert isinstance(instrumented, STD_THREAD)
            assert isinstance(instrumented, cf.Executor)
    finally:
        plain.shutdown()
        own.shutdown()


# -- asyncio ------------------------------------------------------------------------------


def test_asyncio_default_executor_is_instrumented(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    loop = asyncio.new_event_loop()
    try:

        async def work() -> list[int]:
            a = await loop.run_in_executor(None, _double, 1)
            b = await asyncio.to_thread(_double, 2)
            return [a, b]

        assert loop.run_until_complete(work()) == [2, 4]
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    assert submitted(registry, "asyncio") == 2
    assert completed(registry, "asyncio") == 2


def test_asyncio_accepts_plain_pools_while_instrumented(registry: CollectorRegistry) -> None:
    instrument(registry=registry)
    loop = asyncio.new_event_loop()
    plain = STD_THREAD(1)
    try:
        loop.set_default_executor(plain)  # its isinstance check reads the stand-in
        assert loop.run_until_complete(loop.run_in_executor(None, _double, 5)) == 10
    finally:
        loop.close()
        plain.shutdown()
    assert not has_series(registry, "asyncio")


def test_instrument_asyncio_counts_to_thread(registry: CollectorRegistry) -> None:
    async def main() -> tuple[executor_exporter.ThreadPoolExecutor, list[int], str]:
        pool = instrument_asyncio(max_workers=2, registry=registry)
        results = [await asyncio.to_thread(_double, i) for i in range(3)]
        name = await asyncio.to_thread(lambda: threading.current_thread().name)
        return pool, results, name

    pool, results, name = asyncio.run(main())
    assert results == [0, 2, 4]
    assert name.startswith("asyncio_")
    assert pool.executor_id == "asyncio"
    s = pool.stats()
    assert s.submitted == 4 and s.completed == 4
    assert s.workers_max == 0  # asyncio.run shut it down
    assert pool._max_workers == 2
    assert submitted(registry, "asyncio") == 4


def test_instrument_asyncio_given_loop_and_id(registry: CollectorRegistry) -> None:
    loop = asyncio.new_event_loop()
    try:
        pool = instrument_asyncio(loop, executor_id="loop", registry=registry)
        assert loop.run_until_complete(loop.run_in_executor(None, _double, 4)) == 8
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    assert pool.stats().completed == 1
    assert submitted(registry, "loop") == 1


def test_instrument_asyncio_needs_a_loop() -> None:
    with pytest.raises(RuntimeError):
        instrument_asyncio(registry=CollectorRegistry())


def test_instrument_asyncio_while_instrumented(registry: CollectorRegistry) -> None:
    instrument(registry=registry)

    async def main() -> executor_exporter.ThreadPoolExecutor:
        pool = instrument_asyncio(registry=registry)
        await asyncio.to_thread(_double, 1)
        return pool

    pool = asyncio.run(main())
    assert type(pool) is executor_exporter.ThreadPoolExecutor
    assert submitted(registry, "asyncio") == 1  # one pool, counted once


def test_instrument_asyncio_shuts_the_pool_down_when_the_loop_refuses_it() -> None:
    class Refusing:
        pool: Any = None

        def set_default_executor(self, executor: Any) -> None:
            self.pool = executor
            raise TypeError("refused")

    loop = Refusing()
    with pytest.raises(TypeError, match="refused"):
        instrument_asyncio(loop, registry=CollectorRegistry())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="shutdown"):
        loop.pool.submit(_double, 1)

"""Wrong arguments: the stdlib's error where the stdlib has one, a clear one for ours.

Where the stdlib rejects an argument, ours must raise the same type with the same words
for the same call.  Our own arguments (``executor_id``, buckets, ``registry``, the
exporter and proxy) get a TypeError or ValueError that says what is wrong.  After every
failing constructor nothing is half-registered, and no thread or child process is left.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import fault_tasks as ft
from executor_exporter import (
    ExecutorExporter,
    InstrumentedExecutorProxy,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from helpers import all_samples, has_series

ID = "bad"
THREAD_TYPE = "concurrent.futures.thread.ThreadPoolExecutor"
PROCESS_TYPE = "concurrent.futures.process.ProcessPoolExecutor"
FORK = mp.get_context("fork")

Raised = tuple[type[BaseException], str]


def raised(call: Callable[[], Any]) -> Raised | None:
    """The type and message of what ``call`` raises; None (after shutting down what it
    made) when it raises nothing."""
    try:
        made = call()
    except Exception as exc:
        return type(exc), str(exc)
    if isinstance(made, cf.Executor):
        made.shutdown(wait=True)
    return None


def _drain(value: Any) -> Any:
    """Run a lazy map to its end; other calls' results as they are."""
    return list(value) if isinstance(value, Iterator) else value


def assert_not_registered(registry: CollectorRegistry, executor_id: str = ID) -> None:
    for executor_type in (THREAD_TYPE, PROCESS_TYPE):
        labels = {"executor": executor_id, "executor_type": executor_type}
        assert registry.get_sample_value("python_executor_max_workers_total", labels) is None
    assert not has_series(registry, executor_id)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """No thread and no child process outlives the test."""
    threads = threading.active_count()
    yield
    assert threading.active_count() == threads
    assert not mp.active_children()


@pytest.fixture
def ours(registry: CollectorRegistry) -> dict[str, Any]:
    """The keyword arguments every one of our constructors gets here."""
    return {"executor_id": ID, "registry": registry}


def same_error(
    std: Callable[[], Any], mine: Callable[[], Any], registry: CollectorRegistry
) -> Raised:
    expected = raised(std)
    assert expected is not None, "the stdlib accepts this call"
    got = raised(mine)
    assert got == expected
    assert_not_registered(registry)
    assert all_samples(registry) == []  # a fresh registry: not even the collector
    return got


# -- constructors: the stdlib's errors ---------------------------------------------------


def _extra(args: tuple[Any, ...], ours: dict[str, Any]) -> dict[str, Any]:
    """Our keyword arguments for a call, except where they would change the stdlib's
    words: with too many positional arguments Python also counts the keyword-only ones
    given ("... but 6 positional arguments (and 2 keyword-only arguments) were given").
    Such a call fails before the body runs, so it cannot register anything anywhere."""
    return {} if len(args) > 4 else ours


THREAD_CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((0,), {}),
    ((-1,), {}),
    (("x",), {}),
    (("3",), {}),
    ((), {"max_workers": 0}),
    ((), {"max_workers": -1}),
    ((), {"max_workers": "x"}),
    ((1, "", 5), {}),  # initializer, positionally
    ((1,), {"initializer": "not callable"}),
    ((0,), {"initializer": 5}),  # max_workers is checked first
    ((1, "", None, (), 5), {}),  # one positional too many (see _extra)
    ((1,), {"max_tasks_per_child": 1}),  # a process pool argument
    ((1,), {"mp_context": FORK}),
    ((1,), {"nonsense": 1}),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize(("args", "kwargs"), THREAD_CASES)
def test_thread_pool_constructor_errors_like_stdlib(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ours: dict[str, Any],
    registry: CollectorRegistry,
) -> None:
    same_error(
        lambda: cf.ThreadPoolExecutor(*args, **kwargs),
        lambda: ThreadPoolExecutor(*args, **kwargs, **_extra(args, ours)),
        registry,
    )


PROCESS_CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((0,), {}),
    ((-1,), {}),
    (("x",), {}),
    ((), {"max_workers": 0}),
    ((), {"max_workers": "x"}),
    ((1, "fork"), {}),  # a start method's name is not a context
    ((1,), {"mp_context": "spawn"}),
    ((1,), {"mp_context": object()}),
    ((1, None, 5), {}),  # initializer, positionally
    ((1,), {"initializer": "not callable"}),
    ((1,), {"max_tasks_per_child": 0}),
    ((1,), {"max_tasks_per_child": -1}),
    ((1,), {"max_tasks_per_child": "x"}),
    ((1,), {"max_tasks_per_child": 1.5}),
    ((1,), {"max_tasks_per_child": 1, "mp_context": FORK}),
    ((1,), {"max_tasks_per_child": 0, "mp_context": FORK}),  # the value is checked first
    ((0,), {"initializer": 5, "max_tasks_per_child": 0}),  # max_workers first
    ((1,), {"initializer": 5, "max_tasks_per_child": 0}),  # then the initializer
    ((1, None, None, (), 5), {}),  # one positional too many (see _extra)
    ((1,), {"thread_name_prefix": "p"}),  # a thread pool argument
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize(("args", "kwargs"), PROCESS_CASES)
def test_process_pool_constructor_errors_like_stdlib(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ours: dict[str, Any],
    registry: CollectorRegistry,
) -> None:
    same_error(
        lambda: cf.ProcessPoolExecutor(*args, **kwargs),
        lambda: ProcessPoolExecutor(*args, **kwargs, **_extra(args, ours)),
        registry,
    )


# -- initargs: what the stdlib accepts, ours must accept too ------------------------------


def _construct_and_use(make: Callable[[], cf.Executor]) -> tuple[Any, ...]:
    """What a user sees: the constructor's error, or what a first task gives."""
    try:
        pool = make()
    except Exception as exc:
        return ("constructor raised", type(exc), str(exc))
    try:
        exc = pool.submit(ft.square, 3).exception(timeout=30)
    except Exception as error:  # a pool already broken refuses the submit
        return ("submit raised", type(error))
    finally:
        pool.shutdown(wait=True)
    return ("result", 9) if exc is None else ("task failed", type(exc))


INITARGS_CASES = [
    pytest.param("thread", {"initargs": None}, id="thread-no-initializer-initargs-None"),
    pytest.param("thread", {"initargs": 5}, id="thread-no-initializer-initargs-5"),
    pytest.param(
        "thread", {"initializer": ft.getpid, "initargs": 5}, id="thread-initializer-initargs-5"
    ),
    pytest.param("thread", {"initializer": ft.getpid, "initargs": [1]}, id="thread-initargs-list"),
    pytest.param("process", {"initargs": None}, id="process-no-initializer-initargs-None"),
    pytest.param("process", {"initargs": 5}, id="process-no-initializer-initargs-5"),
    pytest.param(
        "process",
        {"initializer": ft.getpid, "initargs": 5},
        id="process-initializer-initargs-5",
    ),
    pytest.param(
        "process", {"initializer": ft.getpid, "initargs": [1]}, id="process-initargs-list"
    ),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize(("kind", "kwargs"), INITARGS_CASES)
def test_initargs_handled_like_stdlib(
    kind: str, kwargs: dict[str, Any], ours: dict[str, Any]
) -> None:
    """The stdlib passes initargs on untouched: unused without an initializer, and a bad
    one breaks the pool at first use, not at construction."""
    if kind == "thread":
        expected = _construct_and_use(lambda: cf.ThreadPoolExecutor(1, **kwargs))
        got = _construct_and_use(lambda: ThreadPoolExecutor(1, **kwargs, **ours))
    else:
        kwargs = {"mp_context": FORK, **kwargs}
        expected = _construct_and_use(lambda: cf.ProcessPoolExecutor(1, **kwargs))
        got = _construct_and_use(lambda: ProcessPoolExecutor(1, **kwargs, **ours))
    assert got == expected


# -- map, submit, shutdown: the stdlib's errors, nothing counted ---------------------------


POOLS: dict[str, tuple[Callable[..., cf.Executor], Callable[..., cf.Executor]]] = {
    "thread": (cf.ThreadPoolExecutor, ThreadPoolExecutor),
    "process": (
        lambda n: cf.ProcessPoolExecutor(n, mp_context=FORK),
        lambda n, **kw: ProcessPoolExecutor(n, mp_context=FORK, **kw),
    ),
}

CALL_CASES: list[Any] = [
    pytest.param(lambda p: p.map(ft.square, [1, 2], chunksize=0), id="map-chunksize-0"),
    pytest.param(lambda p: p.map(ft.square, [1, 2], chunksize=-1), id="map-chunksize--1"),
    pytest.param(lambda p: p.map(ft.square, [1, 2], chunksize="x"), id="map-chunksize-str"),
    pytest.param(lambda p: p.map(ft.square, 5), id="map-not-iterable"),
    pytest.param(lambda p: p.map(ft.square, [1], [2], 5), id="map-third-not-iterable"),
    pytest.param(lambda p: p.map(ft.square, [1], timeout="x"), id="map-timeout-str"),
    pytest.param(lambda p: p.submit(), id="submit-no-fn"),
    pytest.param(lambda p: p.submit(fn=ft.square), id="submit-fn-by-keyword"),
    pytest.param(lambda p: p.shutdown(True, False), id="shutdown-cancel-positional"),
    pytest.param(lambda p: p.shutdown(nonsense=1), id="shutdown-unknown-keyword"),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("kind", sorted(POOLS))
@pytest.mark.parametrize("call", CALL_CASES)
def test_call_errors_like_stdlib(
    kind: str,
    call: Callable[[cf.Executor], Any],
    ours: dict[str, Any],
    registry: CollectorRegistry,
) -> None:
    std_cls, our_cls = POOLS[kind]
    with std_cls(1) as std:
        expected = raised(lambda: _drain(call(std)))
    with our_cls(1, **ours) as pool:
        got = raised(lambda: _drain(call(pool)))
        s = pool.stats()
    assert got == expected
    # Nothing was accepted (a thread pool's map ignores chunksize, as the stdlib's does).
    accepted = 2 if expected is None else 0
    assert (s.submitted, s.completed, s.failed) == (accepted, accepted, 0), s
    assert (s.rejected_shutdown, s.rejected_broken, s.queued, s.running) == (0, 0, 0, 0), s


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("kind", sorted(POOLS))
def test_submit_not_callable_fails_the_task_like_stdlib(kind: str, ours: dict[str, Any]) -> None:
    std_cls, our_cls = POOLS[kind]
    with std_cls(1) as std:
        expected = std.submit(42).exception(timeout=30)
    with our_cls(1, **ours) as pool:
        got = pool.submit(42).exception(timeout=30)
    assert type(got) is type(expected) is TypeError
    assert str(got) == str(expected)
    s = pool.stats()
    assert (s.submitted, s.completed, s.failed, s.wait.count) == (1, 0, 1, 1), s


# -- our own arguments: a clear TypeError or ValueError ----------------------------------


CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "thread": lambda **kw: ThreadPoolExecutor(1, **kw),
    "process": lambda **kw: ProcessPoolExecutor(1, mp_context=FORK, **kw),
    "exporter": lambda **kw: ExecutorExporter(cf.ThreadPoolExecutor(1), **kw),
}

ID_CASES: list[Any] = [
    pytest.param({"executor_id": 1}, "executor_id must be a str, not int", id="int"),
    pytest.param({"executor_id": b"x"}, "executor_id must be a str, not bytes", id="bytes"),
    pytest.param({"executor_id": ["x"]}, "executor_id must be a str, not list", id="list"),
    pytest.param({"exporter_id": 1}, "must be a str, not int", id="alias-int"),
    pytest.param(
        {"executor_id": "a", "exporter_id": "b"},
        "pass executor_id or its alias exporter_id, not both",
        id="both",
    ),
    pytest.param(
        {"executor_id": "a", "exporter_id": "a"},
        "pass executor_id or its alias exporter_id, not both",
        id="both-equal",
    ),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("ctor", sorted(CONSTRUCTORS))
@pytest.mark.parametrize(("kwargs", "message"), ID_CASES)
def test_bad_executor_id(
    ctor: str, kwargs: dict[str, Any], message: str, registry: CollectorRegistry
) -> None:
    with pytest.raises(TypeError) as info:
        CONSTRUCTORS[ctor](registry=registry, **kwargs)
    assert message in str(info.value)
    assert all_samples(registry) == []
    for executor_id in ("a", "b", "x", "1", ""):
        assert_not_registered(registry, executor_id)


BUCKET_CASES: list[Any] = [
    pytest.param([], ValueError, id="empty"),
    pytest.param([2.0, 1.0], ValueError, id="unsorted"),
    pytest.param([0.5, 1, 1, 2], ValueError, id="duplicates"),
    pytest.param([-1, 1], ValueError, id="negative"),
    pytest.param([0, 1], ValueError, id="zero"),
    pytest.param([math.nan], ValueError, id="nan"),
    pytest.param([1, math.nan, 2], ValueError, id="nan-inside"),
    pytest.param([math.inf], ValueError, id="inf-only"),
    pytest.param([math.inf, math.inf], ValueError, id="inf-twice"),
    pytest.param([-math.inf, 1], ValueError, id="minus-inf"),
    pytest.param([1, math.inf, 2], ValueError, id="inf-inside"),
    pytest.param("0.1,1", TypeError, id="a-string"),
    pytest.param(b"12", TypeError, id="bytes"),
    pytest.param([0.1, "a"], TypeError, id="list-with-a-string"),
    pytest.param([0.1, None], TypeError, id="list-with-None"),
    pytest.param(5, TypeError, id="a-number"),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("ctor", sorted(CONSTRUCTORS))
@pytest.mark.parametrize("which", ["wait_buckets", "duration_buckets"])
@pytest.mark.parametrize(("buckets", "error"), BUCKET_CASES)
def test_bad_buckets(
    ctor: str,
    which: str,
    buckets: Any,
    error: type[Exception],
    ours: dict[str, Any],
    registry: CollectorRegistry,
) -> None:
    with pytest.raises(error) as info:
        CONSTRUCTORS[ctor](**ours, **{which: buckets})
    assert type(info.value) is error
    assert which in str(info.value)  # says which argument is wrong
    assert all_samples(registry) == []
    assert_not_registered(registry)


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("ctor", ["thread", "process"])
def test_buckets_clashing_with_the_same_id(
    ctor: str, ours: dict[str, Any], registry: CollectorRegistry
) -> None:
    """A second instance of an id with other buckets is refused, and adds nothing."""
    first = CONSTRUCTORS[ctor](**ours, wait_buckets=[1.0])
    try:
        labels = {
            "executor": ID,
            "executor_type": THREAD_TYPE if ctor == "thread" else PROCESS_TYPE,
        }
        before = [(s.name, s.labels, s.value) for s in all_samples(registry)]
        threads = threading.active_count()
        with pytest.raises(ValueError, match="share buckets"):
            CONSTRUCTORS[ctor](**ours, wait_buckets=[2.0])
        assert threading.active_count() == threads
        assert not mp.active_children()
        after = [(s.name, s.labels, s.value) for s in all_samples(registry)]
        assert after == before
        assert registry.get_sample_value("python_executor_max_workers_total", labels) == 1
        assert registry.get_sample_value("python_executor_workers_max", labels) == 1
    finally:
        first.shutdown()


class NoRegister:
    """Looks like nothing in particular: no ``register`` method."""


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("ctor", sorted(CONSTRUCTORS))
@pytest.mark.parametrize("bad", ["registry", NoRegister()], ids=["str", "object"])
def test_bad_registry(ctor: str, bad: Any) -> None:
    """Not a CollectorRegistry: a TypeError naming the argument (not "cannot create
    weak reference to 'str' object", nor an AttributeError about ``register``)."""
    with pytest.raises(TypeError, match="registry"):
        CONSTRUCTORS[ctor](executor_id=ID, registry=bad)


NOT_EXECUTORS: list[Any] = [
    pytest.param(42, id="int"),
    pytest.param(None, id="None"),
    pytest.param("pool", id="str"),
    pytest.param(object(), id="object"),
    pytest.param(cf.ThreadPoolExecutor, id="the-class-not-an-instance"),
]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("executor", NOT_EXECUTORS)
def test_exporter_of_a_non_executor(executor: Any, registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError, match=r"executor must be a concurrent\.futures\.Executor"):
        ExecutorExporter(executor, executor_id=ID, registry=registry)
    assert all_samples(registry) == []
    assert_not_registered(registry)


@pytest.fixture
def wrapped() -> Iterator[cf.ThreadPoolExecutor]:
    executor = cf.ThreadPoolExecutor(1)
    yield executor
    executor.shutdown()


@pytest.mark.parametrize(
    "exporter",
    [
        pytest.param("exporter", id="str"),
        pytest.param(None, id="None"),
        pytest.param(ExecutorExporter, id="the-class"),
        pytest.param(object(), id="object"),
    ],
)
def test_proxy_with_a_non_exporter(
    exporter: Any, wrapped: cf.ThreadPoolExecutor, registry: CollectorRegistry
) -> None:
    threads = threading.active_count()
    with pytest.raises(TypeError, match="exporter must be an ExecutorExporter"):
        InstrumentedExecutorProxy(wrapped, exporter)
    assert threading.active_count() == threads
    assert all_samples(registry) == []


@pytest.mark.parametrize(
    ("max_workers", "error"),
    [
        pytest.param(0, ValueError, id="0"),
        pytest.param(-1, ValueError, id="-1"),
        pytest.param(True, TypeError, id="True"),
        pytest.param(False, TypeError, id="False"),
        pytest.param("3", TypeError, id="str"),
        pytest.param(2.0, TypeError, id="float"),
    ],
)
def test_proxy_bad_max_workers(
    max_workers: Any,
    error: type[Exception],
    wrapped: cf.ThreadPoolExecutor,
    registry: CollectorRegistry,
) -> None:
    exporter = ExecutorExporter(wrapped, executor_id=ID, registry=registry)
    labels = {"executor": ID, "executor_type": THREAD_TYPE}
    before = [(s.name, s.labels, s.value) for s in all_samples(registry)]
    threads = threading.active_count()
    with pytest.raises(error, match="max_workers") as info:
        InstrumentedExecutorProxy(wrapped, exporter, max_workers)
    assert type(info.value) is error
    assert threading.active_count() == threads
    # The exporter was there before; the failed proxy added nothing to it.
    assert [(s.name, s.labels, s.value) for s in all_samples(registry)] == before
    assert registry.get_sample_value("python_executor_max_workers_total", labels) == 0
    assert registry.get_sample_value("python_executor_workers_max", labels) is None
    assert exporter.stats().max_workers_total == 0


@pytest.mark.parametrize("executor", [pytest.param(42, id="int"), pytest.param(None, id="None")])
def test_proxy_of_a_non_executor(executor: Any, registry: CollectorRegistry) -> None:
    """Like ExecutorExporter, the proxy refuses what is not an executor up front."""
    exporter = ExecutorExporter(cf.ThreadPoolExecutor(1), executor_id=ID, registry=registry)
    with pytest.raises(TypeError, match="executor"):
        InstrumentedExecutorProxy(executor, exporter)

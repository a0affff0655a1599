"""One process of the multi-process tests, run with PROMETHEUS_MULTIPROC_DIR set.

``python mp_worker.py MODE [N]`` runs a workload, prints one JSON line once its numbers
are written (``pid``, and ``exposition``: the normal exposition of the global registry),
then waits for stdin to close before it exits normally.

- ``mixed``: thread, process and proxy pools with completed, failed, cancelled and
  rejected tasks, then ``flush()``; everything idle when printed.
- ``hold N``: pool "web" (4 workers) runs N tasks, then one task that blocks until stdin
  closes (running 1, an oldest-running age), then ``flush()``.
- ``timer N``: pool "web" runs N tasks and never calls ``flush()``: printed once the
  writer thread had time to write; N more tasks after stdin closes, then a normal exit
  (the exit writes them).
- ``fork N``: pool "parent" runs N tasks and flushes; then, while a thread holds the
  locks a flush holds, a forked child runs 2 tasks in pool "child" without flushing,
  waits for its writer thread, exits; then N more "parent" tasks and ``flush()``.
  Prints ``child_pid`` and ``child_exit`` too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time

from prometheus_client import REGISTRY, generate_latest

import executor_exporter
from executor_exporter import ProcessPoolExecutor, ThreadPoolExecutor, multiprocess
from executor_exporter.collector import collector_for


def fail() -> None:
    raise ValueError("task failed")


def mid_flush(held: threading.Event) -> None:
    """Hold what a flush holds for a while, as the writer thread may when fork() comes."""
    collector = collector_for(None)
    with multiprocess._lock, collector._lock:
        held.set()
        time.sleep(0.3)


def report(**extra: object) -> None:
    exposition = generate_latest(REGISTRY).decode()
    print(json.dumps({"pid": os.getpid(), "exposition": exposition, **extra}), flush=True)


def mixed() -> list[concurrent.futures.Executor]:
    web = ThreadPoolExecutor(2, executor_id="web")
    gate = threading.Event()
    blockers = [web.submit(gate.wait) for _ in range(2)]
    queued = [web.submit(abs, -i) for i in range(3)]
    queued[0].cancel()
    gate.set()
    concurrent.futures.wait(blockers + queued)
    assert list(web.map(abs, range(10))) == list(range(10))
    concurrent.futures.wait([web.submit(fail) for _ in range(2)])

    render = ProcessPoolExecutor(2, executor_id="render")
    assert list(render.map(abs, range(-3, 0))) == [3, 2, 1]

    inner = concurrent.futures.ThreadPoolExecutor(3)
    exporter = executor_exporter.ExecutorExporter(inner, executor_id="custom")
    proxy = executor_exporter.InstrumentedExecutorProxy(inner, exporter)  # max_workers unknown
    assert list(proxy.map(abs, range(4))) == [0, 1, 2, 3]

    closed = ThreadPoolExecutor(1, executor_id="closed")
    closed.shutdown()
    with contextlib.suppress(RuntimeError):
        closed.submit(abs, 1)
    time.sleep(0.2)  # let the process pool's done callbacks settle
    return [web, render, proxy]


def main() -> None:
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    pools: list[concurrent.futures.Executor] = []
    gate = threading.Event()
    extra: dict[str, object] = {}
    if mode == "mixed":
        pools = mixed()
        multiprocess.flush()
    elif mode == "hold":
        web = ThreadPoolExecutor(4, executor_id="web")
        pools.append(web)
        list(web.map(abs, range(n)))
        web.submit(gate.wait)
        time.sleep(0.05)  # an age above 0
        multiprocess.flush()
    elif mode == "timer":
        web = ThreadPoolExecutor(2, executor_id="web")
        pools.append(web)
        list(web.map(abs, range(n)))
        time.sleep(multiprocess.FLUSH_INTERVAL * 1.5)
    elif mode == "fork":
        parent = ThreadPoolExecutor(2, executor_id="parent")
        pools.append(parent)
        list(parent.map(abs, range(n)))
        multiprocess.flush()
        held = threading.Event()
        threading.Thread(target=mid_flush, args=(held,)).start()
        held.wait()
        pid = os.fork()  # the at-fork hook waits for the "flush" to end
        if pid == 0:
            child = ThreadPoolExecutor(2, executor_id="child")
            list(child.map(abs, range(2)))
            time.sleep(multiprocess.FLUSH_INTERVAL * 1.5)
            writers = [t for t in threading.enumerate() if t.name.startswith("executor-exporter")]
            os._exit(0 if len(writers) == 1 else 3)
        _, status = os.waitpid(pid, 0)
        extra = {"child_pid": pid, "child_exit": os.waitstatus_to_exitcode(status)}
        list(parent.map(abs, range(n)))
        multiprocess.flush()  # would hang if fork() had left the lock held
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    report(**extra)
    sys.stdin.read()
    gate.set()
    if mode == "timer":
        list(pools[0].map(abs, range(n)))
    for pool in pools:
        pool.shutdown()


if __name__ == "__main__":
    main()

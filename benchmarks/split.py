"""Where a thread pool's cost per task sits: the submitting side and the worker side, each
measured alone, ours against the stdlib, in nanoseconds per task.

One worker is parked on an event while ``--tasks`` no-op calls are submitted: that time
is the submitting side (the future, the work item, the queue; for ours also the clock
read and the pending set).  Then the worker is let go and runs them back to back while
the submitter waits on the last one: that time is the worker side (the run and the
future's changes of state; for ours also the recording).  The whole process is pinned to
one CPU where it can be (Linux), so the two sides never overlap and neither GIL
hand-offs nor moves between cores enter the figures: they are the CPU cost per task
that bench.py's multi-threaded runs include, among much else.  ``--tasks`` stays under
the pending set's first sweep (1024 calls), whose cost, amortized over a deep queue, is
not here.

Each round runs a batch of ``--tasks`` calls ``--batches`` times on each pool, the
pools alternating, and keeps each side's best batch (noise only ever adds time); the
figures are the medians over rounds, the extra cost with its 95% bootstrap interval.

    python benchmarks/split.py               # 21 rounds
    python benchmarks/split.py --quick       # 5 rounds, a smoke run
    python benchmarks/split.py --json out.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

from bench import _median_interval, noop  # benchmarks/ is sys.path[0]
from prometheus_client import CollectorRegistry

import executor_exporter as ee

# A batch takes milliseconds; past this, something is stuck.
_TIMEOUT = 60.0


def _batch(pool: cf.Executor, tasks: int) -> tuple[float, float]:
    """Seconds per task of one batch: (submitting side, worker side)."""
    release, parked = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        release.wait()

    pool.submit(park)
    if not parked.wait(_TIMEOUT):
        raise RuntimeError(f"the worker did not start in {_TIMEOUT} s")
    t0 = time.perf_counter()
    futures = [pool.submit(noop) for _ in range(tasks)]
    t1 = time.perf_counter()
    release.set()
    futures[-1].result(_TIMEOUT)
    t2 = time.perf_counter()
    return (t1 - t0) / tasks, (t2 - t1) / tasks


def _best(pool: cf.Executor, tasks: int, batches: int) -> tuple[float, float]:
    runs = [_batch(pool, tasks) for _ in range(batches)]
    return min(s for s, _ in runs), min(w for _, w in runs)


def _pin() -> str:
    """Pin this process (and the threads it starts) to one CPU, if the OS lets us."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batches", type=int, default=20, help="batches per pool per round")
    parser.add_argument("--tasks", type=int, default=1000, help="calls per batch (< 1024)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if not 0 < args.tasks < 1024:
        parser.error("--tasks must be between 1 and 1023 (the pending set sweeps past that)")
    rounds = args.rounds or (5 if args.quick else 21)
    where = _pin()
    print(
        f"Python {sys.version.split()[0]}, {where}; {rounds} rounds, each side's best of "
        f"{args.batches} batches of {args.tasks} no-op calls, one worker"
    )
    registry = CollectorRegistry()
    sides: dict[str, list[tuple[float, float]]] = {"stdlib": [], "ours": []}
    with (
        cf.ThreadPoolExecutor(1) as std,
        ee.ThreadPoolExecutor(1, executor_id="split", registry=registry) as ours,
    ):
        pools: dict[str, cf.Executor] = {"stdlib": std, "ours": ours}
        for pool in pools.values():
            _best(pool, args.tasks, 2)  # warm up: the thread started, the code hot
        for r in range(rounds):
            order = ["stdlib", "ours"] if r % 2 == 0 else ["ours", "stdlib"]
            for name in order:
                sides[name].append(_best(pools[name], args.tasks, args.batches))
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpu": where,
        "rounds": rounds,
        "batches": args.batches,
        "tasks": args.tasks,
        "sides": {},
    }
    for i, side in enumerate(("submitting side", "worker side")):
        std_ns = [run[i] * 1e9 for run in sides["stdlib"]]
        ours_ns = [run[i] * 1e9 for run in sides["ours"]]
        extra = [o - s for o, s in zip(ours_ns, std_ns, strict=True)]
        low, high = _median_interval(extra)
        print(
            f"{side:<16} stdlib {statistics.median(std_ns):6.0f} ns  "
            f"ours {statistics.median(ours_ns):6.0f} ns  "
            f"extra {statistics.median(extra):5.0f} ns [{low:.0f}-{high:.0f}]"
        )
        results["sides"][side] = {
            "stdlib_ns": statistics.median(std_ns),
            "ours_ns": statistics.median(ours_ns),
            "extra_ns": statistics.median(extra),
            "extra_interval_95": [low, high],
            "stdlib_rounds_ns": std_ns,
            "ours_rounds_ns": ours_ns,
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The thread pool's two paths against the stdlib, interleaved in one run.

Our ThreadPoolExecutor queues work items of its own (known internals, the default) or
wraps each call and submits it through the stdlib's submit (unknown internals, or
``EXECUTOR_EXPORTER_FALLBACK=1``, read when a pool is made).  This script makes the three
kinds of pool (stdlib, own items, wrapped) in turn, in a shuffled order in each round, so
that a drift of the machine touches all three alike.  Each round keeps each side's best
of ``--repeats`` runs; the figure is the median over rounds of (ours / stdlib), with its
95% bootstrap interval (bench.py's).

    python benchmarks/paths.py                    # submit+wait, 21 rounds
    python benchmarks/paths.py --work map         # list(pool.map(...))
    python benchmarks/paths.py --tasks 50000 --rounds 11
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import random
import statistics
import sys
from collections.abc import Callable

from bench import _median_interval, _run_once, _submit_wait, noop  # benchmarks/ is sys.path[0]
from prometheus_client import CollectorRegistry

import executor_exporter as ee
from executor_exporter import _stdlib


def _ours(registry: CollectorRegistry, fallback: str) -> Callable[[], cf.Executor]:
    def make() -> cf.Executor:
        before = os.environ.get(_stdlib.FALLBACK_ENV)
        os.environ[_stdlib.FALLBACK_ENV] = fallback
        try:
            return ee.ThreadPoolExecutor(4, executor_id=f"fallback-{fallback}", registry=registry)
        finally:
            if before is None:
                del os.environ[_stdlib.FALLBACK_ENV]
            else:
                os.environ[_stdlib.FALLBACK_ENV] = before

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", choices=["submit", "map"], default="submit")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per round")
    args = parser.parse_args(argv)
    registry = CollectorRegistry()
    makers: dict[str, Callable[[], cf.Executor]] = {
        "stdlib": lambda: cf.ThreadPoolExecutor(4),
        "own items": _ours(registry, "0"),
        "wrapped": _ours(registry, "1"),
    }
    n = args.tasks

    def work(pool: cf.Executor) -> None:
        if args.work == "submit":
            _submit_wait(pool, n)
        else:
            list(pool.map(noop, range(n)))

    best: dict[str, list[float]] = {name: [] for name in makers}
    for r in range(args.rounds):
        runs: dict[str, list[float]] = {name: [] for name in makers}
        for i in range(args.repeats):
            order = list(makers)
            random.Random(r * args.repeats + i).shuffle(order)
            for name in order:
                runs[name].append(_run_once(makers[name], work)[0])
        for name, times in runs.items():
            best[name].append(min(times))
    print(
        f"Python {sys.version.split()[0]}: thread pool, 4 workers, {args.work} of {n} no-ops; "
        f"{args.rounds} rounds of best-of-{args.repeats}, shuffled"
    )
    std = best["stdlib"]
    print(f"  {'stdlib':<10} {statistics.median(std) * 1e3:8.1f} ms")
    for name in ("own items", "wrapped"):
        ratios = [ours / base for ours, base in zip(best[name], std)]
        low, high = _median_interval(ratios)
        print(
            f"  {name:<10} {statistics.median(best[name]) * 1e3:8.1f} ms  "
            f"ratio {statistics.median(ratios):.2f} [{low:.2f}-{high:.2f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

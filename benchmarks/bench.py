"""Overhead of executor-exporter against the stdlib, measured in one interleaved run.

Each round runs every scenario ``--repeats`` times on the stdlib pool and as many times
on the instrumented pool, alternating, and keeps the best time of each side (noise on a
shared machine only ever adds time); the figure reported is the median over rounds of
(instrumented best / stdlib best).  Beside each wall-time ratio it prints the ratio of CPU
time (this process's threads plus the pool's worker processes, read from /proc, so on
Linux only): it tells extra work from extra waiting, though on a shared VM (steal
time, tick-granular child times) it is not much steadier than wall time.

    python benchmarks/bench.py            # all scenarios
    python benchmarks/bench.py --quick    # fewer tasks and rounds, a smoke run
    python benchmarks/bench.py --json out.json
    EXECUTOR_EXPORTER_FALLBACK=1 python benchmarks/bench.py   # the public-API path

Targets (issue 15): thread pool submit+wait and ``list(map)`` <= 1.10x; process submit
<= 1.05x; process chunked map <= 1.10x; tasks that do something (100 µs of CPU, 1 ms of
sleep) <= 1.05x, where the recording should vanish; a scrape of 100 executors < 10 ms.  A
target is met when the whole 95% interval of the median ratio is under it, MISSED when
the whole interval is over it, undecided otherwise.  A full run is 21 rounds (11 to 16
minutes on 2 cores); this script reports what it measured and never fails on a miss.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

import executor_exporter as ee


def noop(x: Any = None) -> Any:
    return x


def cpu_100us(x: Any = None) -> Any:
    """About 100 µs of CPU: spins on the clock, so the same on any machine."""
    end = time.perf_counter() + 100e-6
    while time.perf_counter() < end:
        pass
    return x


def sleep_1ms(x: Any = None) -> Any:
    time.sleep(0.001)
    return x


def _submit_wait(pool: cf.Executor, n: int, fn: Callable[[], object] = noop) -> None:
    cf.wait([pool.submit(fn) for _ in range(n)])


def _map(pool: cf.Executor, n: int, chunksize: int = 1) -> None:
    list(pool.map(noop, range(n), chunksize=chunksize))


Scenario = tuple[
    str, Callable[[], cf.Executor], Callable[[], cf.Executor], Callable[[cf.Executor], None], float
]


def _scenarios(quick: bool, registry: CollectorRegistry) -> list[Scenario]:
    n_thread = 10_000 if quick else 20_000
    n_proc = 1_000 if quick else 5_000
    n_map = 10_000 if quick else 50_000
    n_real = 200 if quick else 1_000
    return [
        (
            f"thread submit+wait {n_thread} no-ops, 4 workers",
            lambda: cf.ThreadPoolExecutor(4),
            lambda: ee.ThreadPoolExecutor(4, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_thread),
            1.10,
        ),
        (
            f"thread list(map) {n_thread} no-ops, 4 workers",
            lambda: cf.ThreadPoolExecutor(4),
            lambda: ee.ThreadPoolExecutor(4, executor_id="bench", registry=registry),
            lambda p: _map(p, n_thread),
            1.10,
        ),
        (
            f"process submit+wait {n_proc} tiny tasks, 2 workers",
            lambda: cf.ProcessPoolExecutor(2),
            lambda: ee.ProcessPoolExecutor(2, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_proc),
            1.05,
        ),
        (
            f"process list(map) {n_map} no-ops chunksize=100, 2 workers",
            lambda: cf.ProcessPoolExecutor(2),
            lambda: ee.ProcessPoolExecutor(2, executor_id="bench", registry=registry),
            lambda p: _map(p, n_map, chunksize=100),
            1.10,
        ),
        # Tasks that do something: the recording is a fixed cost per task, so against
        # 100 µs of work or 1 ms of waiting it should vanish (ratio 1.00).
        (
            f"thread submit+wait {n_real} tasks of 100 µs CPU, 4 workers",
            lambda: cf.ThreadPoolExecutor(4),
            lambda: ee.ThreadPoolExecutor(4, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_real, cpu_100us),
            1.05,
        ),
        (
            f"thread submit+wait {n_real} tasks of 1 ms sleep, 4 workers",
            lambda: cf.ThreadPoolExecutor(4),
            lambda: ee.ThreadPoolExecutor(4, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_real, sleep_1ms),
            1.05,
        ),
        (
            f"process submit+wait {n_real} tasks of 100 µs CPU, 2 workers",
            lambda: cf.ProcessPoolExecutor(2),
            lambda: ee.ProcessPoolExecutor(2, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_real, cpu_100us),
            1.05,
        ),
        (
            f"process submit+wait {n_real} tasks of 1 ms sleep, 2 workers",
            lambda: cf.ProcessPoolExecutor(2),
            lambda: ee.ProcessPoolExecutor(2, executor_id="bench", registry=registry),
            lambda p: _submit_wait(p, n_real, sleep_1ms),
            1.05,
        ),
    ]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu(pool: cf.Executor) -> float | None:
    """CPU seconds used so far by this process and the pool's live worker processes."""
    total = time.process_time()
    for pid in getattr(pool, "_processes", None) or ():
        try:
            with open(f"/proc/{pid}/stat") as f:
                # Fields 14 and 15 (utime, stime), counted after the "(comm)" field.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _run_once(
    make: Callable[[], cf.Executor], work: Callable[[cf.Executor], None]
) -> tuple[float, float | None]:
    """Wall and CPU seconds of one run of ``work`` on a warmed-up pool."""
    with make() as pool:
        work(pool)  # warm up: threads or processes started, imports done
        gc.collect()
        cpu0 = _cpu(pool)
        t0 = time.perf_counter()
        work(pool)
        wall = time.perf_counter() - t0
        cpu1 = _cpu(pool)
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        return wall, cpu


def _round(
    make_std: Callable[[], cf.Executor],
    make_ee: Callable[[], cf.Executor],
    work: Callable[[cf.Executor], None],
    repeats: int,
) -> tuple[tuple[float, float | None], tuple[float, float | None]]:
    """Best wall and CPU times of ``repeats`` runs of each side, alternating: noise only
    ever adds time."""
    std: list[tuple[float, float | None]] = []
    ours: list[tuple[float, float | None]] = []
    for i in range(repeats):
        pair = [(make_std, std), (make_ee, ours)]
        for make, out in pair if i % 2 == 0 else reversed(pair):
            out.append(_run_once(make, work))
    return _best(std), _best(ours)


def _median_interval(values: list[float], draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median of ``values`` (seeded: reruns agree)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def _verdict(low: float, high: float, target: float) -> str:
    if high <= target:
        return "met"
    return "MISSED" if low > target else "undecided"


def _best(runs: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    cpus = [cpu for _, cpu in runs if cpu is not None]
    return min(wall for wall, _ in runs), min(cpus) if len(cpus) == len(runs) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each side per round (best kept)"
    )
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 21)
    registry = CollectorRegistry()
    # Which path our pools take: the internals, or public API only (an unknown
    # interpreter, or EXECUTOR_EXPORTER_FALLBACK=1); see executor_exporter._stdlib.
    path = "internals" if ee._stdlib.check() else "public API only"
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "path": path,
        "rounds": rounds,
        "scenarios": {},
    }
    print(
        f"Python {results['python']}, our pools' path: {path}; "
        f"{rounds} rounds of best-of-{args.repeats}, interleaved"
    )
    for name, make_std, make_ee, work, target in _scenarios(args.quick, registry):
        if args.only not in name:
            continue
        ratios, cpu_ratios, std_t, ee_t = [], [], [], []
        for _ in range(rounds):
            (s, s_cpu), (e, e_cpu) = _round(make_std, make_ee, work, args.repeats)
            std_t.append(s)
            ee_t.append(e)
            ratios.append(e / s)
            if s_cpu and e_cpu is not None:
                cpu_ratios.append(e_cpu / s_cpu)
        ratio = statistics.median(ratios)
        low, high = _median_interval(ratios)
        cpu_ratio = statistics.median(cpu_ratios) if len(cpu_ratios) == rounds else None
        verdict = _verdict(low, high, target)
        cpu_text = "   n/a" if cpu_ratio is None else f"{cpu_ratio:6.2f}"
        print(
            f"{name:<55} stdlib {statistics.median(std_t) * 1e3:8.1f} ms  "
            f"ours {statistics.median(ee_t) * 1e3:8.1f} ms  ratio {ratio:5.2f} "
            f"[{low:.2f}-{high:.2f}] (target <= {target}: {verdict})  cpu ratio {cpu_text}"
        )
        results["scenarios"][name] = {
            "stdlib_ms": statistics.median(std_t) * 1e3,
            "ours_ms": statistics.median(ee_t) * 1e3,
            "ratio": ratio,
            "ratio_interval_95": [low, high],
            "verdict": verdict,
            "ratios": ratios,
            "cpu_ratio": cpu_ratio,
            "cpu_ratios": cpu_ratios,
            "target": target,
        }
    if not args.only or args.only in "scrape":
        # Imported here: benchmarks/scrape.py imports this module (_median_interval).
        from scrape import scrape_medians

        ours, text = scrape_medians(100, 5 if args.quick else 20)
        verdict = "met" if ours * 1e3 < 10 else "MISSED"
        print(
            f"{'scrape of 100 thread pools: collect()':<55} {ours * 1e3:8.2f} ms "
            f"(target < 10 ms: {verdict}); whole text exposition {text * 1e3:.1f} ms"
        )
        results["scrape_100_collect_ms"] = ours * 1e3
        results["scrape_100_generate_latest_ms"] = text * 1e3
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

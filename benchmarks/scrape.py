"""Scrape cost as the work grows: more executors, and more tasks run by one executor.

Two measurements, in one run:

* **Executors.**  1, 10, 100 and 1,000 thread pools of 2 workers (and 1, 10 and 100
  process pools of 1 worker), each having run 20 no-op tasks, in one registry.  Each
  round times our collector's ``collect()`` (the families built, not rendered), then
  ``prometheus_client.generate_latest(registry)`` (the whole text exposition, which
  calls ``collect()`` again); after those rounds, each "changed" round first has every
  pool run one more task, then times ``collect()``: then no histogram's cached bucket
  samples can be reused, as when every pool is busy between two scrapes.  The first
  ``collect()`` round is the first scrape of those pools (cold label caches); it is
  kept in the rounds, and also shown alone.
* **Tasks.**  One thread pool of 2 workers runs 1,000,000 no-op tasks in batches of
  ``list(pool.map(noop, batch))``; at 0, 1k, 10k, 100k and 1M tasks run, ``collect()``
  is timed as above (unchanged, then changed).  Its workers count in per-worker slots
  of plain counters, summed at scrape: the cost should not grow with the tasks.

Each figure is the median over rounds, with a 95% bootstrap interval of the median
(bench.py's); a garbage collection runs before each timed call, outside the timing.
The per-executor cost is the median divided by the number of executors.

    python benchmarks/scrape.py                  # all of it, 70-90 s on 2 CPUs
    python benchmarks/scrape.py --quick          # up to 100 executors, 100k tasks, ~15 s
    python benchmarks/scrape.py --no-process     # thread pools only
    python benchmarks/scrape.py --json benchmarks/results/scrape-3.11.json
    python scripts/plot_scrape.py benchmarks/results/scrape-3.11.json  # docs/scrape-cost.png

Target (from the issues): a scrape of 100 executors < 10 ms (its ``collect()``, as
bench.py reports it).  This script reports what it measured; it never fails on a miss.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from bench import _median_interval, noop  # benchmarks/ is sys.path[0] here
from prometheus_client import CollectorRegistry, generate_latest

import executor_exporter as ee
from executor_exporter.collector import collector_for

#: Tasks each pool runs before the executor rounds, as bench.py's scrape line always did.
TASKS_PER_POOL = 20
#: Tasks per ``pool.map`` call on the way to the next checkpoint.
BATCH = 10_000

Make = Callable[[int, CollectorRegistry], cf.Executor]
KINDS: dict[str, Make] = {
    "thread": lambda i, registry: ee.ThreadPoolExecutor(2, executor_id=f"e{i}", registry=registry),
    "process": lambda i, registry: ee.ProcessPoolExecutor(
        1, executor_id=f"e{i}", registry=registry
    ),
}


def _time(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _ms(seconds: list[float]) -> list[float]:
    return [s * 1e3 for s in seconds]


def _summary(values_ms: list[float]) -> dict[str, Any]:
    low, high = _median_interval(values_ms)
    return {"median_ms": statistics.median(values_ms), "interval_95_ms": [low, high]}


def measure_executors(
    n_executors: int, rounds: int, *, kind: str = "thread", changed: bool = False
) -> dict[str, list[float]]:
    """Seconds of each round, by what was timed: ``collect``, ``generate_latest`` and
    (if ``changed``) ``changed_collect``; ``setup``: one time, pools made and warmed."""
    registry = CollectorRegistry()
    t0 = time.perf_counter()
    pools = [KINDS[kind](i, registry) for i in range(n_executors)]
    try:
        for p in pools:
            cf.wait([p.submit(noop) for _ in range(TASKS_PER_POOL)])
        setup = time.perf_counter() - t0
        collector = collector_for(registry)
        times: dict[str, list[float]] = {"setup": [setup]}
        times["collect"] = [_time(lambda: list(collector.collect())) for _ in range(rounds)]
        times["generate_latest"] = [
            _time(lambda: generate_latest(registry)) for _ in range(rounds)
        ]
        if changed:
            times["changed_collect"] = []
            for _ in range(rounds):
                cf.wait([p.submit(noop) for p in pools])
                times["changed_collect"].append(_time(lambda: list(collector.collect())))
        return times
    finally:
        for p in pools:
            p.shutdown()


def scrape_medians(n_executors: int, rounds: int) -> tuple[float, float]:
    """Median seconds of (our collector's collect(), the whole text exposition) for
    ``n_executors`` thread pools: bench.py's scrape line."""
    times = measure_executors(n_executors, rounds)
    return statistics.median(times["collect"]), statistics.median(times["generate_latest"])


def measure_tasks(checkpoints: list[int], rounds: int) -> dict[str, Any]:
    """collect() of one thread pool at each checkpoint of tasks run, and the run times."""
    registry = CollectorRegistry()
    points = []
    run_total = 0.0
    done = batched = 0
    with ee.ThreadPoolExecutor(2, executor_id="busy", registry=registry) as pool:
        collector = collector_for(registry)
        for target in checkpoints:
            t0 = time.perf_counter()
            while done < target:
                batch = min(BATCH, target - done)
                list(pool.map(noop, range(batch)))
                done += batch
                batched += batch
            run = time.perf_counter() - t0
            run_total += run
            tasks = done
            unchanged = [_time(lambda: list(collector.collect())) for _ in range(rounds)]
            changed = []
            for _ in range(rounds):
                pool.submit(noop).result()
                done += 1
                changed.append(_time(lambda: list(collector.collect())))
            points.append(
                {
                    "tasks": tasks,
                    "run_s": run,
                    "collect_ms": _ms(unchanged),
                    "collect": _summary(_ms(unchanged)),
                    "changed_collect_ms": _ms(changed),
                    "changed_collect": _summary(_ms(changed)),
                }
            )
            _print_task_point(points[-1])
    return {
        "kind": "thread",
        "workers": 2,
        "batch": BATCH,
        "tasks_run": done,
        "batched": batched,
        "run_s": run_total,
        "points": points,
    }


def _interval(summary: dict[str, Any], digits: int = 3) -> str:
    low, high = summary["interval_95_ms"]
    return f"{summary['median_ms']:9.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def _print_task_point(point: dict[str, Any]) -> None:
    print(
        f"  {point['tasks']:>9,} tasks (+{point['run_s']:6.2f} s to get there)  "
        f"collect() {_interval(point['collect'])} ms  "
        f"changed {_interval(point['changed_collect'])} ms"
    )


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            info["cpu"] = models[0]
    except OSError:
        pass
    return info


def source() -> dict[str, Any]:
    """The commit measured, and whether src/ differs from it (uncommitted changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "src_changes": [line for line in changed if line]}


def _cpu_seconds() -> tuple[float, float, float] | None:
    """CPU seconds used so far: (the whole machine, this process and its reaped
    children, stolen by the hypervisor); None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    t = os.times()
    ours = t.user + t.system + t.children_user + t.children_system
    return (user + nice + system + irq + softirq) / tick, ours, steal / tick


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="up to 100 executors, 100k tasks, fewer rounds"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure")
    parser.add_argument("--no-process", action="store_true", help="thread pools only")
    parser.add_argument("--json", default=None, help="write the raw numbers to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 20)
    if rounds < 2:
        print("scrape: --rounds must be at least 2", file=sys.stderr)
        return 2
    sizes = {
        "thread": [1, 10, 100] if args.quick else [1, 10, 100, 1000],
        "process": [] if args.no_process else [1, 10] if args.quick else [1, 10, 100],
    }
    checkpoints = [0, 1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000])
    start, wall_start = _cpu_seconds(), time.perf_counter()
    path = "internals" if ee._stdlib.check() else "public API only"
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "executor_exporter": ee.__version__,
        "prometheus_client": metadata.version("prometheus_client"),
        "path": path,
        "machine": machine(),
        "source": source(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "rounds": rounds,
        "tasks_per_pool": TASKS_PER_POOL,
        "executors": [],
    }
    print(
        f"Python {results['python']} ({results['implementation']}), our pools' path: {path}; "
        f"{results['machine']['nproc']} CPUs; median of {rounds} rounds [95% interval]"
    )
    if results["source"]:
        print(
            f"commit {results['source']['commit'][:10]}, "
            f"{len(results['source']['src_changes'])} file(s) of src/ changed since"
        )

    print(f"\nOne thread pool of 2 workers, collect() as tasks are run (batches of {BATCH:,}):")
    t0 = time.perf_counter()
    results["tasks"] = measure_tasks(checkpoints, rounds)
    tasks = results["tasks"]
    print(
        f"  the {tasks['batched']:,} tasks of the map batches ran in {tasks['run_s']:.1f} s "
        f"({tasks['batched'] / tasks['run_s']:,.0f} tasks/s); "
        f"section {time.perf_counter() - t0:.0f} s"
    )

    for kind, counts in sizes.items():
        if not counts:
            continue
        workers = 2 if kind == "thread" else 1
        print(
            f"\n{kind.capitalize()} pools of {workers} worker(s), {TASKS_PER_POOL} tasks each; "
            "times in ms:"
        )
        print(
            f"  {'pools':>5}  {'collect() median [95%]':>30}  {'us/pool':>7}  "
            f"{'first':>7}  {'changed collect()':>28}  {'generate_latest()':>28}  setup"
        )
        for n in counts:
            times = measure_executors(n, rounds, kind=kind, changed=True)
            row: dict[str, Any] = {"kind": kind, "workers": workers, "executors": n}
            row["setup_s"] = times.pop("setup")[0]
            for name, values in times.items():
                row[f"{name}_ms"] = _ms(values)
                row[name] = _summary(_ms(values))
            row["collect_us_per_executor"] = row["collect"]["median_ms"] * 1e3 / n
            row["first_collect_ms"] = row["collect_ms"][0]
            results["executors"].append(row)
            digits = 2 if n >= 100 else 3
            print(
                f"  {n:>5}  {_interval(row['collect'], digits):>30}  "
                f"{row['collect_us_per_executor']:7.1f}  {row['first_collect_ms']:7.2f}  "
                f"{_interval(row['changed_collect'], digits):>28}  "
                f"{_interval(row['generate_latest'], digits):>28}  {row['setup_s']:.1f} s"
            )

    results["wall_s"] = time.perf_counter() - wall_start
    end = _cpu_seconds()
    if start is not None and end is not None:
        # Whatever else ran on the machine meanwhile (the noise of a shared VM).
        results["other_cpu_s"] = (end[0] - start[0]) - (end[1] - start[1])
        results["steal_s"] = end[2] - start[2]
        print(
            f"\nrun {results['wall_s']:.0f} s; meanwhile other processes used "
            f"{results['other_cpu_s']:.1f} CPU-s, steal {results['steal_s']:.1f} s"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

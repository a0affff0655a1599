"""Instructions per task, ours against the stdlib, counted by valgrind's callgrind.

Wall-time ratios of a process pool on a shared 2-vCPU machine move by ±0.1 between runs
of the same code (see bench.py), which hides a change of a few per cent.  Instruction
counts hardly move: runs of the same code agree within about half a per cent, whatever
else the machine does (string hashing is pinned, and the interpreter's start-up objects
are frozen out of the garbage collector, whose full passes would otherwise land at a
different point of each run).  So this script tells whether a change made the hot path
cheaper; bench.py tells what a user would see.  Instructions are not time (a syscall or
a cache miss costs many cycles and counts as little), and valgrind runs the threads one
at a time.

Each scenario runs twice per side under callgrind, with 0 and with ``--tasks`` tasks
after the same warm-up; the difference, divided by the number of tasks, is the cost of a
task in the parent (all its threads) and in the workers (summed).

    python benchmarks/instructions.py               # needs valgrind (Debian: valgrind)
    python benchmarks/instructions.py --tasks 500   # quicker, a little less exact
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import os
import re
import shutil
import subprocess
import sys
from typing import Any

# name: (what it runs, items per task: counts are given per item)
SCENARIOS = {
    "process submit": ("submit+wait of tiny tasks, 2 workers", 1),
    "process map": ("list(map(noop, range(10 * tasks), chunksize=100)), 2 workers", 10),
}


def noop(x: Any = None) -> Any:
    return x


def _child(side: str, scenario: str, n: int) -> None:
    """Run under callgrind: warm up, then ``n`` tasks; print this pid and the workers'."""
    if side == "stdlib":
        pool = cf.ProcessPoolExecutor(2)
    else:
        from prometheus_client import CollectorRegistry

        import executor_exporter as ee

        pool = ee.ProcessPoolExecutor(2, executor_id="bench", registry=CollectorRegistry())

    def work(count: int) -> None:
        if scenario == "process submit":
            cf.wait([pool.submit(noop) for _ in range(count)])
        else:
            list(pool.map(noop, range(10 * count), chunksize=100))

    with pool:
        work(200)
        gc.freeze()  # see the module docstring
        work(n)
        workers = pool._processes
        print(os.getpid(), *workers)


def _count(side: str, scenario: str, n: int) -> tuple[int, int]:
    """Instructions of (the parent, the workers) for one run."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            side,
            scenario,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    parent, *workers = (int(pid) for pid in proc.stdout.split())
    counts = {
        int(pid): int(total.replace(",", ""))
        for pid, total in re.findall(r"==(\d+)== Collected : ([\d,]+)", proc.stderr)
    }
    return counts[parent], sum(counts[pid] for pid in workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        side, scenario, n = args.child
        _child(side, scenario, int(n))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    print(f"Python {sys.version.split()[0]}, {args.tasks} tasks, instructions per item")
    for scenario, (text, items) in SCENARIOS.items():
        if args.only not in scenario:
            continue
        per_item = {}
        for side in ("stdlib", "ours"):
            (p0, w0), (p1, w1) = (_count(side, scenario, n) for n in (0, args.tasks))
            per_item[side] = ((p1 - p0) / args.tasks / items, (w1 - w0) / args.tasks / items)
        (sp, sw), (op, ow) = per_item["stdlib"], per_item["ours"]
        print(
            f"{scenario} ({text}):\n"
            f"  parent   stdlib {sp:10,.0f}  ours {op:10,.0f}  ratio {op / sp:5.3f}\n"
            f"  workers  stdlib {sw:10,.0f}  ours {ow:10,.0f}  ratio {ow / sw:5.3f}"
        )
    return 0


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") is None:  # str hashes vary the dict work per run
        os.environ["PYTHONHASHSEED"] = "0"
    raise SystemExit(main())

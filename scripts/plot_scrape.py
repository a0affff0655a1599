"""Plot the scrape cost measured by benchmarks/scrape.py into a PNG.

Two panels: on the left, ``collect()`` and ``generate_latest()`` times against the
number of executors (log-log; thread pools solid, process pools dotted), and on the
right, ``collect()`` of one thread pool against the tasks it has run (log x).  Each
point is the median over the run's rounds, its error bar the 95% bootstrap interval of
that median, as scrape.py printed them; nothing is measured here.

    python benchmarks/scrape.py --json benchmarks/results/scrape-3.11.json
    python scripts/plot_scrape.py benchmarks/results/scrape-3.11.json
    python scripts/plot_scrape.py RESULTS.json -o /tmp/scrape.png

matplotlib is not a dependency of executor-exporter: ``pip install matplotlib`` (or the
``plot`` extra) first.  Exit codes: 0 written, 1 the results file cannot be read or has
nothing to plot, 2 bad arguments or matplotlib missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scrape-3.11.json"
OUTPUT = ROOT / "docs" / "scrape-cost.png"
# What was timed: (key in scrape.py's rows, legend, colour).
MEASURES = [
    ("collect", "collect()", "tab:blue"),
    ("changed_collect", "collect(), each pool ran a task since the last", "tab:orange"),
    ("generate_latest", "generate_latest() (whole text exposition)", "tab:green"),
]
KIND_STYLE = {"thread": ("-", "o"), "process": (":", "s")}


class PlotError(Exception):
    """The results file cannot be read, or holds nothing to plot."""


def load(path: Path) -> dict[str, Any]:
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlotError(f"{path}: {exc}") from exc
    if not results.get("executors") and not results.get("tasks", {}).get("points"):
        raise PlotError(f"{path}: no executor rows and no task points (not scrape.py's?)")
    return results


def _errors(summaries: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Medians, and matplotlib's asymmetric error bars from the 95% intervals."""
    medians = [s["median_ms"] for s in summaries]
    low = [m - s["interval_95_ms"][0] for m, s in zip(medians, summaries)]
    high = [s["interval_95_ms"][1] - m for m, s in zip(medians, summaries)]
    return medians, [low, high]


def draw(results: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 7.2), layout="constrained")

    rows = results.get("executors", [])
    for kind, (linestyle, marker) in KIND_STYLE.items():
        kind_rows = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["executors"])
        if not kind_rows:
            continue
        workers = kind_rows[0]["workers"]
        xs = [r["executors"] for r in kind_rows]
        for key, legend, colour in MEASURES:
            if not all(key in r for r in kind_rows):
                continue
            medians, errors = _errors([r[key] for r in kind_rows])
            left.errorbar(
                xs,
                medians,
                yerr=errors,
                label=f"{kind} pools ({workers} worker{'s' * (workers > 1)}): {legend}",
                color=colour,
                linestyle=linestyle,
                marker=marker,
                markersize=5,
                capsize=3,
                markerfacecolor=colour if kind == "thread" else "white",
            )
            if key == "collect" and kind == "thread":
                for x, r in zip(xs, kind_rows):
                    left.annotate(
                        f"{r['collect_us_per_executor']:.0f} µs/pool",
                        (x, r[key]["median_ms"]),
                        textcoords="offset points",
                        xytext=(6, -14),
                        fontsize=8,
                        color=colour,
                    )
    left.axhline(10, color="red", linewidth=1, linestyle=(0, (6, 4)))
    left.annotate(
        "target: collect() of 100 pools < 10 ms",
        (0.01, 10),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(0, 2),
        va="bottom",
        fontsize=8,
        color="red",
    )
    left.set_xscale("log")
    left.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    left.xaxis.set_major_formatter(plain)
    left.yaxis.set_major_formatter(plain)
    left.set_xlabel("executors in the registry")
    left.set_ylabel("time per scrape (ms)")
    left.set_title(
        f"Scrape time vs executors ({results.get('tasks_per_pool', '?')} tasks run by each)",
        fontsize=12,
        fontweight="bold",
    )
    left.grid(True, which="major", alpha=0.3)
    left.grid(True, which="minor", alpha=0.1)
    if rows:
        left.legend(
            fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False
        )
    else:
        left.text(0.5, 0.5, "no data", transform=left.transAxes, ha="center", va="center")

    tasks = results.get("tasks", {})
    points = sorted(tasks.get("points", []), key=lambda p: p["tasks"])
    if points:
        xs = [p["tasks"] for p in points]
        for key, legend, colour in MEASURES[:2]:
            medians, errors = _errors([p[key] for p in points])
            right.errorbar(
                xs,
                medians,
                yerr=errors,
                label=legend,
                color=colour,
                marker="o",
                markersize=5,
                capsize=3,
            )
        # Log x with 0 (a fresh pool) on it: linear below 1,000 tasks.
        right.set_xscale("symlog", linthresh=1000, linscale=0.5)
        right.set_xlim(left=-100, right=xs[-1] * 2)
        right.set_xticks([x for x in [0, 10**3, 10**4, 10**5, 10**6, 10**7] if x <= xs[-1]])
        right.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        right.set_ylim(bottom=0, top=max(p["collect"]["interval_95_ms"][1] for p in points) * 2)
        batched, run = tasks.get("batched"), tasks.get("run_s")
        if batched and run:
            right.text(
                0.98,
                0.04,
                f"{batched:,} no-op tasks in list(pool.map()) batches of "
                f"{tasks.get('batch', 0):,}: {run:.1f} s ({batched / run:,.0f} tasks/s)",
                transform=right.transAxes,
                ha="right",
                fontsize=8,
            )
        right.legend(fontsize=8, loc="upper left", frameon=False)
    else:
        right.text(0.5, 0.5, "no data", transform=right.transAxes, ha="center", va="center")
    right.set_xlabel("tasks run by the executor")
    right.set_ylabel("collect() time (ms)")
    right.set_title(
        f"collect() of one thread pool ({tasks.get('workers', '?')} workers) vs tasks run",
        fontsize=12,
        fontweight="bold",
    )
    right.grid(True, which="major", alpha=0.3)

    when = results.get("date", "")
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M UTC")
    machine = results.get("machine", {})
    commit = results.get("source", {}).get("commit", "")
    changes = len(results.get("source", {}).get("src_changes", []))
    if commit:
        commit = f", commit {commit[:10]}" + (
            f" + {changes} changed file(s) in src/" * bool(changes)
        )
    fig.suptitle(
        f"executor-exporter {results.get('executor_exporter', '')} scrape cost: Python "
        f"{results.get('python', '?')} ({results.get('implementation', '?')}), run {when}"
        f"{commit}\n"
        f"median of {results.get('rounds', '?')} rounds, error bars 95% bootstrap interval "
        f"of the median\n{machine.get('nproc', '?')} CPUs, {machine.get('platform', '?')}, "
        f"prometheus_client {results.get('prometheus_client', '?')}"
        + (" (--quick)" if results.get("quick") else "")
        + (
            f"; other processes used {results['other_cpu_s']:.0f} CPU-s "
            f"during the {results['wall_s']:.0f} s run"
            if "other_cpu_s" in results and "wall_s" in results
            else ""
        ),
        fontsize=12,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Plot the scrape cost measured by benchmarks/scrape.py into a PNG."
    )
    parser.add_argument(
        "results",
        type=Path,
        nargs="?",
        default=RESULTS,
        help="JSON written by scrape.py --json (default: %(default)s)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=OUTPUT, help="PNG to write (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_scrape: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    try:
        results = load(args.results)
    except PlotError as exc:
        print(f"plot_scrape: {exc}", file=sys.stderr)
        return 1
    draw(results, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

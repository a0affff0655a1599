"""Render the panels of monitoring/dashboard.json from a running Prometheus into a PNG.

No Grafana needed: every panel query is run through ``/api/v1/query_range`` over the
last N minutes, with the dashboard's variables filled in, and drawn with matplotlib
(one subplot per panel, one colour per executor, legends as the dashboard's).

    python scripts/plot_dashboard.py http://127.0.0.1:9090 --minutes 3
    python scripts/plot_dashboard.py URL --job my-app --executor 'api|render' -o out.png
    python scripts/plot_dashboard.py URL --minutes 3 --end 1795626300   # a past run

matplotlib is not a dependency of executor-exporter: ``pip install matplotlib`` first.
Exit codes: 0 written, 1 Prometheus could not be queried or returned no data, 2 bad
arguments or matplotlib missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "dashboard.json"
OUTPUT = ROOT / "docs" / "dashboard.png"
LINE_STYLES = ["-", "--", ":", "-."]
UNIT_LABELS = {
    "percentunit": "share (%)",
    "s": "seconds",
    "ops": "per second",
    "short": "count",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class PlotError(Exception):
    """Prometheus could not be queried, or gave nothing to draw."""


@dataclass
class Series:
    legend: str
    executor: str
    times: list[datetime]
    values: list[float]


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``30s``, ``1m30s`` or ``500ms``."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def get(base: str, path: str, **params: str) -> Any:
    url = f"{base.rstrip('/')}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise PlotError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PlotError(f"{url}: {exc}") from exc
    if body.get("status") != "success":
        raise PlotError(f"{url}: {body}")
    return body["data"]


def scrape_interval(base: str) -> float:
    """The global scrape interval of the Prometheus at ``base`` (15s if not found)."""
    config = get(base, "status/config")["yaml"]
    match = re.search(r"^\s+scrape_interval:\s*(\S+)", config, re.MULTILINE)
    return parse_duration(match.group(1)) if match else 15.0


def render_legend(legend: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend).strip()


def panel_series(
    base: str,
    panel: dict[str, Any],
    variables: dict[str, str],
    start: float,
    end: float,
    step: float,
) -> list[Series]:
    series = []
    for target in panel.get("targets", []):
        expr = target["expr"]
        for name, value in variables.items():
            expr = expr.replace(f"${name}", value)
        data = get(
            base,
            "query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=format_duration(step),
        )
        for result in data["result"]:
            labels = result["metric"]
            points = [(float(t), float(v)) for t, v in result["values"]]
            series.append(
                Series(
                    render_legend(target.get("legendFormat", ""), labels) or str(labels),
                    labels.get("executor", ""),
                    [datetime.fromtimestamp(t, tz=timezone.utc) for t, _ in points],
                    [v for _, v in points],
                )
            )
    return sorted(series, key=lambda s: s.legend)


def draw(
    panels: list[tuple[dict[str, Any], list[Series]]], title: str, subtitle: str, output: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 5.2 * rows), squeeze=False)
    executors = sorted({s.executor for _, series in panels for s in series})
    palette = plt.get_cmap("tab10").colors
    colours = {e: palette[i % len(palette)] for i, e in enumerate(executors)}

    for ax, (panel, series) in zip(axes.flat, panels):
        defaults = panel["fieldConfig"]["defaults"]
        unit = defaults.get("unit", "short")
        log = defaults.get("custom", {}).get("scaleDistribution", {}).get("type") == "log"
        # One line style per kind of series in the panel (what the legend adds to the
        # executor): "queued" solid, "running" dashed, and so on.
        kinds: list[str] = []
        for s in series:
            kind = s.legend.removeprefix(s.executor).strip()
            if kind not in kinds:
                kinds.append(kind)
        for s in series:
            kind = s.legend.removeprefix(s.executor).strip()
            values = [v if v == v and not (log and v <= 0) else float("nan") for v in s.values]
            ax.plot(
                s.times,
                values,
                label=s.legend,
                color=colours.get(s.executor, "black"),
                linestyle=LINE_STYLES[kinds.index(kind) % len(LINE_STYLES)],
                # Earlier executors are drawn wider, so that lines on equal values (two
                # pools of the same size, say) still show every colour.
                linewidth=1.2 + 0.7 * (len(executors) - 1 - executors.index(s.executor))
                if s.executor in executors
                else 1.2,
            )
        for step in defaults.get("thresholds", {}).get("steps", []):
            if step.get("value") is not None and step.get("color") == "red":
                ax.axhline(step["value"], color="red", linewidth=1, linestyle=(0, (6, 4)))
                ax.annotate(
                    "alert threshold",
                    (0.99, step["value"]),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    va="bottom",
                    fontsize=8,
                    color="red",
                )
        ax.set_title(panel["title"], fontsize=12, fontweight="bold")
        ax.set_ylabel(UNIT_LABELS.get(unit, unit))
        ax.set_xlabel("time (UTC)")
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0, top=defaults.get("max"))
        if unit == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.grid(True, which="major", alpha=0.3)
        if series:
            ax.legend(
                fontsize=8,
                ncol=3 if len(series) > 4 else 1,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                frameon=False,
            )
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")

    fig.suptitle(f"{title}\n{subtitle}", fontsize=14)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.0)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Render the panels of monitoring/dashboard.json from Prometheus into a PNG."
    )
    parser.add_argument("url", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="length of the time range (default: 10)"
    )
    parser.add_argument(
        "--end",
        type=float,
        default=None,
        metavar="UNIX_TIME",
        help="end of the time range, in seconds since the epoch (default: now)",
    )
    parser.add_argument("--job", default=".*", help="regex for the $job variable (default: .*)")
    parser.add_argument(
        "--executor", default=".*", help="regex for the $executor variable (default: .*)"
    )
    parser.add_argument(
        "--rate-interval",
        default=None,
        help="what $__rate_interval becomes (default, as Grafana: max(step + scrape "
        "interval, 4 x scrape interval), the scrape interval read from Prometheus)",
    )
    parser.add_argument(
        "--points", type=int, default=240, help="points per line, about (default: 240)"
    )
    parser.add_argument(
        "--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: %(default)s)"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=OUTPUT, help="PNG to write (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.points < 2:
        print("plot_dashboard: --minutes must be positive, --points at least 2", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_dashboard: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2

    dashboard = json.loads(args.dashboard.read_text())
    end = time.time() if args.end is None else args.end
    start = end - 60.0 * args.minutes
    step = max(1.0, (end - start) / args.points)
    try:
        if args.rate_interval is None:
            scrape = scrape_interval(args.url)
            rate_interval = format_duration(max(step + scrape, 4 * scrape))
        else:
            parse_duration(args.rate_interval)
            rate_interval = args.rate_interval
        variables = {
            # Longest first: $__rate_interval is replaced before any shorter name.
            "__rate_interval": rate_interval,
            "executor": args.executor,
            "job": args.job,
        }
        panels = [
            (panel, panel_series(args.url, panel, variables, start, end, step))
            for panel in dashboard["panels"]
            if panel.get("targets")
        ]
    except (PlotError, ValueError) as exc:
        print(f"plot_dashboard: {exc}", file=sys.stderr)
        return 1
    if not any(series for _, series in panels):
        print(f"plot_dashboard: no data in the last {args.minutes:g} minutes", file=sys.stderr)
        return 1

    when = datetime.fromtimestamp(end, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"last {args.minutes:g} min to {when}, job=~{args.job!r}, executor=~{args.executor!r}, "
        f"$__rate_interval={rate_interval}, step={format_duration(step)}"
    )
    draw(panels, dashboard["title"], subtitle, args.output)
    empty = [panel["title"] for panel, series in panels if not series]
    print(f"wrote {args.output} ({len(panels)} panels)")
    if empty:
        print(f"  no data: {', '.join(empty)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

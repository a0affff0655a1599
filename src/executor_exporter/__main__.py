"""The command line: ``executor-exporter {demo,top,table}``, or ``python -m executor_exporter``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .metrics import markdown_table

__all__ = ["build_parser", "main"]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, not {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``executor-exporter`` command."""
    parser = argparse.ArgumentParser(
        prog="executor-exporter",
        description="Prometheus metrics for concurrent.futures executors.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a mixed workload on instrumented pools and serve /metrics",
        description="Run a mixed workload on instrumented pools, serve /metrics for "
        "Prometheus and print a live summary. Ctrl-C stops it.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    demo.add_argument(
        "--port",
        type=_port,
        default=9464,
        help="port to bind, 0 for any free one (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--interval",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="seconds between summary lines (default: %(default)s)",
    )
    top = commands.add_parser(
        "top",
        help="a live terminal view of the pools behind /metrics URLs",
        description="Show the pools of one or more /metrics endpoints, like htop: "
        "utilization, queue, throughput, failures, wait and duration quantiles, oldest "
        "queued and running ages. Keys: q quits, s sorts by the next column.",
    )
    top.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="endpoints to watch (default: the demo's http://127.0.0.1:9464/metrics)",
    )
    top.add_argument(
        "--interval",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="seconds between scrapes; rates are taken over it (default: %(default)s)",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="print one frame from two scrapes --interval apart and exit (for scripts, "
        "CI logs and bug reports); exit 1 if an endpoint cannot be read",
    )
    top.add_argument(
        "--stuck",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="flag a pool STUCK when a task has run this long (default: %(default)s)",
    )
    commands.add_parser(
        "table",
        help="print the metric table of the README (markdown)",
        description="Print the metric table of the README, generated from the metric definitions.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "table":
        sys.stdout.write(markdown_table())
        return 0
    if args.command == "top":
        from .top import run_top

        return run_top(args.urls, args.interval, args.once, args.stuck)
    if args.command == "demo":
        from .demo import run_demo

        try:
            return run_demo(args.host, args.port, args.duration, args.interval)
        except KeyboardInterrupt:  # a second Ctrl-C, while shutting down
            return 130
        except OSError as exc:  # the port is taken, the address is not ours...
            print(f"executor-exporter demo: {exc}", file=sys.stderr)
            return 1
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

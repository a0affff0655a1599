"""A process pool for CPU-bound work, its numbers served from the parent process.

The tasks run in worker processes; the counts, waits and durations are true in this
process, which serves /metrics (the workers report through shared memory).

    python examples/process_pipeline.py            # serves http://127.0.0.1:9464/metrics
    executor-exporter top

``--once`` runs one batch, prints the pool's stats and exits (the test of this file runs
that).
"""

from __future__ import annotations

import argparse
import multiprocessing

from prometheus_client import start_http_server

from executor_exporter import ProcessPoolExecutor


def checksum(block: int) -> int:
    """About a millisecond of pure-Python CPU work: the kind of task worth a process."""
    return sum(i * i for i in range(block * 1000, block * 1000 + 20_000)) % 1_000_003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9464)
    parser.add_argument("--once", action="store_true", help="one batch, then exit")
    args = parser.parse_args()
    server, _ = start_http_server(args.port, addr="127.0.0.1")
    print(f"serving http://127.0.0.1:{server.server_address[1]}/metrics")
    # spawn: the safe start method when the parent runs threads (the metrics server does).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context, executor_id="checksums") as pool:
        while True:
            # Each item is a task in the metrics, chunked or not.
            total = sum(pool.map(checksum, range(200), chunksize=10))
            print(f"batch done: {total}")
            if args.once:
                break
    print(pool.stats())
    server.shutdown()


if __name__ == "__main__":  # required: spawned workers import this module
    main()

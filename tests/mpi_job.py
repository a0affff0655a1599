"""An mpi4py job for tests/test_remote.py: a proxied MPIPoolExecutor, reported as JSON.

Run in a process of its own (MPI is initialised once per process), with mpiexec on PATH.
Usage: python tests/mpi_job.py TMPDIR
"""

from __future__ import annotations

import json
import os
import sys
import time

from mpi4py.futures import MPIPoolExecutor
from prometheus_client import CollectorRegistry

from executor_exporter import ExecutorExporter, InstrumentedExecutorProxy
from proc_tasks import raise_at, square, wait_for_file


def main(tmp: str) -> None:
    registry = CollectorRegistry()
    with MPIPoolExecutor(max_workers=2) as executor:
        exporter = ExecutorExporter(executor, executor_id="mpi", registry=registry)
        proxy = InstrumentedExecutorProxy(executor, exporter, max_workers=2)
        results = list(proxy.map(square, range(8)))
        try:
            proxy.submit(raise_at, 7).result()
            error = None
        except ValueError as exc:
            error = str(exc)
        release = os.path.join(tmp, "go")
        blocked = [proxy.submit(wait_for_file, release) for _ in range(3)]
        deadline = time.monotonic() + 60
        while proxy.stats().running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        s = proxy.stats()
        live = {"running": s.running, "queued": s.queued}
        open(release, "w").close()
        for f in blocked:
            f.result()
        s = proxy.stats()
    final = {
        "submitted": s.submitted,
        "completed": s.completed,
        "failed": s.failed,
        "running": s.running,
        "queued": s.queued,
        "wait_count": s.wait.count,
    }
    print(
        json.dumps(
            {
                "detected": exporter.remote,
                "results": results,
                "error": error,
                "live": live,
                "final": final,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

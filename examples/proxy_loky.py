"""Any other executor, through the proxy: loky's reusable process pool.

loky is not a dependency of executor-exporter (``pip install loky``). The proxy counts
each call in this process; its workers post their starts on shared memory, so
``running`` and the waits are live, and the durations ride back with the results.

    python examples/proxy_loky.py
"""

from __future__ import annotations

from loky import get_reusable_executor  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, generate_latest

from executor_exporter import ExecutorExporter, InstrumentedExecutorProxy


def square(x: int) -> int:
    return x * x


def main() -> None:
    registry = CollectorRegistry()  # or leave it out: the global registry
    executor = get_reusable_executor(max_workers=2)
    exporter = ExecutorExporter(executor, executor_id="loky", registry=registry)
    pool = InstrumentedExecutorProxy(executor, exporter, max_workers=2)
    print(sum(pool.map(square, range(100))))
    pool.shutdown()
    print(exporter.stats())
    text = generate_latest(registry).decode()
    print(next(line for line in text.splitlines() if "submitted_tasks_total{" in line))


if __name__ == "__main__":
    main()

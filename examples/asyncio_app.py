"""asyncio: blocking calls through asyncio.to_thread / run_in_executor, measured.

    python examples/asyncio_app.py

``instrument_asyncio()`` gives the running loop a default executor of ours (id
"asyncio"); every ``asyncio.to_thread`` and ``run_in_executor(None, ...)`` is counted.
"""

from __future__ import annotations

import asyncio
import time

import executor_exporter


def blocking_io(n: int) -> int:
    time.sleep(0.01)  # a library without an async API
    return n


async def main() -> None:
    pool = executor_exporter.instrument_asyncio()
    results = await asyncio.gather(*(asyncio.to_thread(blocking_io, n) for n in range(20)))
    loop = asyncio.get_running_loop()
    results.append(await loop.run_in_executor(None, blocking_io, 20))
    print(f"{len(results)} calls; {pool.stats()}")


if __name__ == "__main__":
    asyncio.run(main())

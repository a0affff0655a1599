"""A thread pool behind a web handler, with /metrics on the same server.

Each request to /report fans out its lookups to one shared pool and waits for them; a
scrape of /metrics shows whether that pool saturates (utilization, queued, wait p99).

    python examples/web_backend.py                 # serves http://127.0.0.1:8000
    curl 'http://127.0.0.1:8000/report?items=20'
    curl http://127.0.0.1:8000/metrics | grep python_executor_
    executor-exporter top http://127.0.0.1:8000/metrics

``--once`` serves a few requests to itself, prints the pool's stats and exits (the test
of this file runs that).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from executor_exporter import ThreadPoolExecutor

# One pool for the whole process, as a web back end has: its id is the `executor` label.
lookups = ThreadPoolExecutor(8, thread_name_prefix="lookup", executor_id="lookups")


def lookup(item: int) -> int:
    time.sleep(random.uniform(0.001, 0.005))  # a database or HTTP call
    return item * item


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/metrics":
            body, kind = generate_latest(), CONTENT_TYPE_LATEST
        elif url.path == "/report":
            items = int(parse_qs(url.query).get("items", ["10"])[0])
            total = sum(lookups.map(lookup, range(items)))
            body, kind = f"{total}\n".encode(), "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--once", action="store_true", help="serve a few requests, then exit")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"serving {base}/report and {base}/metrics")
    if not args.once:
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for _ in range(5):
        urllib.request.urlopen(f"{base}/report?items=20").read()
    metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    server.shutdown()
    lookups.shutdown()
    print(lookups.stats())
    print(next(line for line in metrics.splitlines() if "submitted_tasks_total{" in line))


if __name__ == "__main__":
    main()

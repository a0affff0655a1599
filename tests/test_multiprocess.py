"""Multi-process mode (PROMETHEUS_MULTIPROC_DIR): what MultiProcessCollector shows.

prometheus_client picks its value class when imported, so every writer is a subprocess
(``mp_worker.py``) with the variable set; this process only reads the directory.  The
end-to-end test runs a real gunicorn with ``gunicorn_app.py`` and ``gunicorn_conf.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import glob
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from executor_exporter import METRICS, ThreadPoolExecutor, multiprocess
from executor_exporter import metrics as m

TESTS = Path(__file__).resolve().parent
THREAD = "concurrent.futures.thread.ThreadPoolExecutor"
TIMEOUT = 30.0
LIVE_GAUGES = {
    "python_executor_queued_tasks",
    "python_executor_running_tasks_total",
    "python_executor_workers",
    "python_executor_workers_max",
    "python_executor_oldest_queued_task_age_seconds",
    "python_executor_oldest_running_task_age_seconds",
}

# name -> (type, help, {(sample name, sorted labels): value})
Families = dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]


def parse(text: str) -> Families:
    """Our families of an exposition that have samples, samples keyed by name and labels."""
    out: Families = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("python_executor_"):
            continue  # the global registry's process and gc collectors
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
        if samples:
            out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def read_dir(path: Path, pid: int | None = None) -> Families:
    """What MultiProcessCollector shows for the directory, or for one pid's files."""
    if pid is None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(path))
    else:
        files = glob.glob(os.path.join(path, f"*_{pid}.db"))

        class OnePid:
            def collect(self) -> Any:
                return MultiProcessCollector.merge(files, accumulate=True)

        registry = CollectorRegistry()
        registry.register(OnePid())
    return parse(generate_latest(registry).decode())


def value(fams: Families, name: str, executor: str = "web", **labels: str) -> float | None:
    """One sample of a family, by sample name (None when absent)."""
    family = name
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in fams:
            family = name[: -len(suffix)]
    if family.endswith("_total") and family not in fams:
        family = family[: -len("_total")]
    if family not in fams:
        return None
    want = {"executor": executor, "executor_type": THREAD, **labels}
    return fams[family][2].get((name, tuple(sorted(want.items()))))


@dataclass
class Worker:
    """A running ``mp_worker.py``: its report, and its stdin to let it exit."""

    proc: subprocess.Popen[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self) -> None:
        """Close stdin: the worker ends its work and exits normally."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(TIMEOUT) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)


@pytest.fixture
def mp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "multiproc"
    path.mkdir()
    return path


@pytest.fixture
def start(mp_dir: Path) -> Iterator[Callable[..., Worker]]:
    """Start ``mp_worker.py MODE ARGS`` with PROMETHEUS_MULTIPROC_DIR, wait for its report."""
    workers: list[Worker] = []
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    env.pop("prometheus_multiproc_dir", None)

    def start(*args: object) -> Worker:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "mp_worker.py"), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its pool workers and forked child too, at teardown
        )
        worker = Worker(proc)
        workers.append(worker)
        assert proc.stdout is not None
        # Bounded: a worker stuck on a lock must fail the test, not hang it.
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, f"mp_worker {args} did not report within {TIMEOUT}s"
        line = proc.stdout.readline()
        assert line, f"mp_worker {args} exited with {proc.wait(TIMEOUT)} before reporting"
        worker.report = json.loads(line)
        return worker

    yield start
    for worker in workers:
        kill_group(worker.proc)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process started in a session of its own, and whatever it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT)


def test_one_process_shows_what_the_collector_shows(
    mp_dir: Path, start: Callable[..., Worker]
) -> None:
    worker = start("mixed")
    normal = parse(worker.report["exposition"])
    mp = read_dir(mp_dir)
    # Every family with its type, help, label sets and values; workers is left out for
    # the proxy and workers_max too, since its max_workers is unknown.
    assert mp == normal
    assert set(mp) == {
        d.name.removesuffix("_total") if d.type == "counter" else d.name for d in METRICS
    }
    assert value(mp, "python_executor_submitted_tasks_total") == 17
    assert value(mp, "python_executor_cancelled_tasks_total") == 1
    assert value(mp, "python_executor_tasks_duration_seconds_count", result="failed") == 2
    assert value(mp, "python_executor_rejected_tasks_total", "closed", reason="shutdown") == 1
    custom = {"executor": "custom"}
    for name in ("python_executor_workers", "python_executor_workers_max"):
        assert not [k for k in mp[name][2] if custom.items() <= dict(k[1]).items()]
    worker.finish()


def snapshot(src: Path, dst: Path) -> Path:
    """Copy the directory: writers update ages and busy time every second."""
    shutil.copytree(src, dst)
    return dst


def combine(x: Families, y: Families, name: str) -> dict[Any, float]:
    """Samples of ``name`` in x and y merged as MultiProcessCollector does."""
    xs, ys = x.get(name, ("", "", {}))[2], y.get(name, ("", "", {}))[2]
    pick = max if "oldest" in name else (lambda a, b: a + b)
    return {k: pick(xs.get(k, ys.get(k)), ys.get(k, xs.get(k))) for k in xs.keys() | ys.keys()}


def test_processes_add_up_and_dead_ones_drop_their_live_gauges(
    mp_dir: Path, tmp_path: Path, start: Callable[..., Worker]
) -> None:
    a, b = start("hold", 5), start("hold", 7)
    snap = snapshot(mp_dir, tmp_path / "snap1")
    one, two, both = read_dir(snap, a.pid), read_dir(snap, b.pid), read_dir(snap)
    assert value(both, "python_executor_submitted_tasks_total") == 5 + 1 + 7 + 1
    assert value(both, "python_executor_running_tasks_total") == 2
    assert value(both, "python_executor_workers_max") == 8
    assert value(both, "python_executor_oldest_running_task_age_seconds") > 0
    # Every sample is the sum of the two processes', the ages their max.
    assert both.keys() == one.keys() == two.keys()
    for name, (_, _, samples) in both.items():
        assert samples == pytest.approx(combine(one, two, name)), name

    b.kill()
    mark_process_dead(b.pid, str(mp_dir))  # what gunicorn's child_exit hook does
    snap = snapshot(mp_dir, tmp_path / "snap2")
    one, dead, after = read_dir(snap, a.pid), read_dir(snap, b.pid), read_dir(snap)
    assert not dead.keys() & LIVE_GAUGES
    assert value(dead, "python_executor_submitted_tasks_total") == 7 + 1
    for name in LIVE_GAUGES & both.keys():
        assert after[name] == one[name], name  # only the live process's gauges
    for name in both.keys() - LIVE_GAUGES:
        assert after[name][2] == pytest.approx(combine(one, dead, name)), name
    assert value(after, "python_executor_submitted_tasks_total") == 5 + 1 + 7 + 1
    assert value(after, "python_executor_workers_max") == 4
    a.finish()


def test_the_writer_thread_writes_every_second_and_at_exit(
    mp_dir: Path, start: Callable[..., Worker]
) -> None:
    worker = start("timer", 6)  # reports 1.5 flush intervals after its tasks, no flush()
    assert value(read_dir(mp_dir), "python_executor_submitted_tasks_total") == 6
    worker.finish()  # 6 more tasks, shut down, exit: atexit writes
    final = read_dir(mp_dir)
    assert value(final, "python_executor_submitted_tasks_total") == 12
    assert value(final, "python_executor_workers_max") == 0


def test_a_forked_child_writes_its_own_files(mp_dir: Path, start: Callable[..., Worker]) -> None:
    worker = start("fork", 3)
    child = worker.report["child_pid"]
    assert worker.report["child_exit"] == 0  # its writer thread ran, just one
    mine, childs = read_dir(mp_dir, worker.pid), read_dir(mp_dir, child)
    assert value(childs, "python_executor_submitted_tasks_total", "child") == 2
    # The child wrote through its own files, not the parent's inherited handles.
    assert value(mine, "python_executor_submitted_tasks_total", "child") is None
    # The parent still writes after the fork: the lock taken for fork() was released.
    assert value(mine, "python_executor_submitted_tasks_total", "parent") == 6
    worker.finish()


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Multi-process mode in this very process; its writer is ended and forgotten after.

    prometheus_client chose MutexValue when imported here, so multiprocess uses a value
    class of its own: the fallback path (the subprocesses share prometheus_client's).
    """
    path = tmp_path / "here"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    assert multiprocess._writer_pid is None
    yield path
    with multiprocess._lock:
        multiprocess._writer_pid = None  # its thread ends at its next wake-up
        multiprocess._seen.clear()
        multiprocess._values.clear()
        multiprocess._bases.clear()
        multiprocess._written.clear()
        multiprocess._value_class = None
    for thread in threading.enumerate():
        if thread.name == "executor-exporter-multiprocess":
            thread.join(TIMEOUT)
            assert not thread.is_alive()


def test_every_registry_adds_up_and_a_dropped_one_is_kept(here: Path) -> None:
    first = CollectorRegistry()
    second = CollectorRegistry()
    a = ThreadPoolExecutor(2, executor_id="web", registry=first)
    b = ThreadPoolExecutor(3, executor_id="web", registry=second)
    list(a.map(abs, range(4)))
    list(b.map(abs, range(6)))
    multiprocess.flush()
    mp = read_dir(here)
    assert value(mp, "python_executor_submitted_tasks_total") == 10
    assert value(mp, "python_executor_workers_max") == 5
    # A registry dropped with its pool: its counters stay, its gauges go to 0.
    b.shutdown()
    del b, second
    gc.collect()
    list(a.map(abs, range(1)))
    multiprocess._at_exit()  # the last write of an exiting process
    mp = read_dir(here)
    assert value(mp, "python_executor_submitted_tasks_total") == 11
    assert value(mp, "python_executor_workers_max") == 2
    a.shutdown()


def test_counters_go_on_from_a_file_left_with_the_same_pid(here: Path) -> None:
    # An exited process with our pid (pids are reused) left counts; keep them, as
    # prometheus_client's own inc() does, rather than overwrite them.
    left = MmapedDict(str(here / f"counter_{os.getpid()}.db"))
    family, labels = m.SUBMITTED.name[: -len("_total")], ("executor", "executor_type")
    key = mmap_key(family, m.SUBMITTED.name, labels, ("web", THREAD), m.SUBMITTED.help)
    left.write_value(key, 5.0, 0.0)
    left.close()
    registry = CollectorRegistry()
    pool = ThreadPoolExecutor(2, executor_id="web", registry=registry)
    list(pool.map(abs, range(3)))
    multiprocess.flush()
    assert value(read_dir(here), "python_executor_submitted_tasks_total") == 5 + 3
    pool.shutdown()


def test_the_writer_thread_logs_a_failure_once(
    here: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(here / "missing"))
    registry = CollectorRegistry()
    pool = ThreadPoolExecutor(1, executor_id="web", registry=registry)
    with pytest.raises(FileNotFoundError):
        multiprocess.flush()  # raised to the caller, logged by the thread
    deadline = time.monotonic() + TIMEOUT
    while not caplog.records:
        assert time.monotonic() < deadline, "the writer thread logged nothing"
        time.sleep(0.05)
    time.sleep(multiprocess.FLUSH_INTERVAL * 1.2)
    assert len(caplog.records) == 1
    assert "PROMETHEUS_MULTIPROC_DIR" in caplog.records[0].getMessage()
    pool.shutdown()


def test_flush_does_nothing_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    assert not multiprocess.enabled()
    multiprocess.flush()
    assert multiprocess._writer_pid is None


# --- a real gunicorn ---------------------------------------------------------------------

WORKERS = 3
POOL_SIZE = 4  # gunicorn_app.POOL_SIZE


def require_gunicorn() -> None:
    """Skip without gunicorn, except under ``CI=true`` where that is a failure."""
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        message = "gunicorn is not installed (it is in the 'test' extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true, so this is a failure")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gunicorn:
    url: str
    mp_dir: Path
    log: Path

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body: bytes = response.read()
            return body.decode()

    def metrics(self) -> Families:
        return parse(self.get("/metrics"))

    def wait_for(self, what: str, ok: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-3000:]
                pytest.fail(f"gunicorn: {what} within {timeout}s\n--- log ---\n{log}")
            time.sleep(0.1)


@pytest.fixture
def gunicorn(mp_dir: Path, tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn serving gunicorn_app with WORKERS sync workers; always stopped."""
    require_gunicorn()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    env.pop("prometheus_multiproc_dir", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(TESTS / "gunicorn_conf.py"),
                "--chdir",
                str(TESTS),
                "--workers",
                str(WORKERS),
                "--bind",
                f"127.0.0.1:{port}",
                "gunicorn_app:app",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Gunicorn(f"http://127.0.0.1:{port}", mp_dir, log)
    try:

        def up() -> bool:
            assert proc.poll() is None, "gunicorn exited"
            try:
                server.get("/metrics")
            except OSError:
                return False
            return True

        server.wait_for("serving", up)
        yield server
    finally:
        proc.terminate()  # gunicorn stops its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        kill_group(proc)  # whatever is left


def test_gunicorn_workers_add_up_and_a_killed_one_keeps_only_its_counters(
    gunicorn: Gunicorn,
) -> None:
    # Concurrent requests, so that several workers serve some.
    tasks_by_pid: dict[int, int] = {}
    sent = 0

    def work(n: int) -> tuple[int, int]:
        return int(gunicorn.get(f"/work?n={n}")), n

    deadline = time.monotonic() + 20
    with concurrent.futures.ThreadPoolExecutor(WORKERS * 2) as client:
        while len(tasks_by_pid) < 2 or sent < 12:
            assert time.monotonic() < deadline, f"requests reached only {tasks_by_pid}"
            for pid, n in client.map(work, range(1, WORKERS * 2 + 1)):
                tasks_by_pid[pid] = tasks_by_pid.get(pid, 0) + n
                sent += 1
    total = sum(tasks_by_pid.values())
    time.sleep(multiprocess.FLUSH_INTERVAL * 1.5)

    before = gunicorn.metrics()
    assert value(before, "python_executor_submitted_tasks_total") == total
    completed = value(before, "python_executor_tasks_duration_seconds_count", result="completed")
    assert completed == total
    assert value(before, "python_executor_running_tasks_total") == 0
    assert value(before, "python_executor_queued_tasks") == 0
    assert value(before, "python_executor_workers_max") == WORKERS * POOL_SIZE

    victim = max(tasks_by_pid, key=tasks_by_pid.__getitem__)
    own = read_dir(gunicorn.mp_dir, victim)
    assert value(own, "python_executor_submitted_tasks_total") == tasks_by_pid[victim]
    os.kill(victim, signal.SIGKILL)
    # gunicorn reaps it, calls child_exit (mark_process_dead) and starts a new worker.
    gunicorn.wait_for(
        "child_exit removed the live gauges",
        lambda: not glob.glob(str(gunicorn.mp_dir / f"gauge_live*_{victim}.db")),
    )
    dead = read_dir(gunicorn.mp_dir, victim)
    assert not dead.keys() & LIVE_GAUGES
    assert value(dead, "python_executor_submitted_tasks_total") == tasks_by_pid[victim]
    # Once the new worker wrote, the pools of the live workers only: 3 again, not 4.
    gunicorn.wait_for(
        "the new worker's pool to show",
        lambda: value(gunicorn.metrics(), "python_executor_workers_max") == WORKERS * POOL_SIZE,
    )
    time.sleep(multiprocess.FLUSH_INTERVAL * 1.5)
    after = gunicorn.metrics()
    assert value(after, "python_executor_workers_max") == WORKERS * POOL_SIZE
    assert value(after, "python_executor_submitted_tasks_total") == total
    completed = value(after, "python_executor_tasks_duration_seconds_count", result="completed")
    assert completed == total
    # max_workers_total counts every pool ever created: the new worker's too.
    assert value(after, "python_executor_max_workers_total") == (WORKERS + 1) * POOL_SIZE
    # The other counters and the histograms kept their totals, the dead worker's included.
    growing = {"python_executor_busy_seconds", "python_executor_max_workers"}
    for name in before.keys() - LIVE_GAUGES - growing:
        assert after[name] == before[name], name

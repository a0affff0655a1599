"""Multi-process mode: write this process's numbers where ``MultiProcessCollector`` reads.

Under gunicorn and other pre-fork servers, ``/metrics`` is served by one worker at a time
through ``prometheus_client.multiprocess.MultiProcessCollector``, which reads the per-pid
mmap files of ``PROMETHEUS_MULTIPROC_DIR`` and runs no custom collector.  So when that
variable (or prometheus_client's older lowercase ``prometheus_multiproc_dir``) is set
the first time an executor is exported in a process, a daemon thread of that process
writes the totals of every executor it exports into those files once a second, with the
exact keys prometheus_client's own ``Counter``, ``Gauge`` and ``Histogram`` write:

* counters as counters, histograms as per-bucket counts plus ``_sum``, all summed over
  processes by ``MultiProcessCollector`` (a dead process's counters stay, as they should);
* the gauges queued, running, workers and workers_max as ``livesum``, the two oldest-age
  gauges as ``livemax``: a dead process's gauges vanish once
  ``prometheus_client.multiprocess.mark_process_dead(pid)`` is called for it (gunicorn's
  ``child_exit`` hook).

Values are at most one second old (:func:`flush` writes now; interpreter exit writes a
last time).  Nothing of this runs on the task path: the writer reads the executors the
way a scrape does.  Instances sharing an id and type add up over every registry of the
process, as they do over processes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from prometheus_client import values
from prometheus_client.utils import floatToGoString

from . import metrics as m
from ._layout import Layout
from ._state import Totals
from .collector import ExecutorCollector, all_collectors, group_points

__all__ = ["FLUSH_INTERVAL", "enabled", "flush"]

#: Seconds between two writes of the writer thread.
FLUSH_INTERVAL = 1.0

_ENV_VARS = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")

_log = logging.getLogger(__name__)

# (metric definition, sample name, label names, label values)
_Key = tuple[m.MetricDefinition, str, tuple[str, ...], tuple[str, ...]]

_LIVEMAX = frozenset({m.OLDEST_QUEUED.name, m.OLDEST_RUNNING.name})

# Held for a whole flush and across fork(), so that a child never starts with a lock
# (ours, a collector's, prometheus_client's file lock) held by the writer of its parent.
_lock = threading.Lock()
_lock_held_for_fork = False
# Pid whose writer thread runs: None before the first export, not ours in a forked child.
_writer_pid: int | None = None
_hooks_registered = False
# The mmap value class and one value object per key.  prometheus_client reopens the
# files of every value object of its class itself when the pid changes, so both survive
# fork(); the child then writes under its own pid.
_value_class: Any = None
_values: dict[_Key, Any] = {}
# Per process: the value found in the file when first written (see _write), and the
# last value written, so that unchanged values are not written again.
_bases: dict[_Key, float] = {}
_written: dict[_Key, float] = {}
# Every collector ever read, kept so that counters never go back if a registry is
# dropped (a dropped registry's collector is no longer listed by all_collectors).
_seen: dict[int, ExecutorCollector] = {}
_failing = False


def enabled() -> bool:
    """Whether multi-process mode is on: the variable prometheus_client reads is set."""
    return any(name in os.environ for name in _ENV_VARS)


def flush() -> None:
    """Write this process's numbers into ``PROMETHEUS_MULTIPROC_DIR`` now.

    Does nothing when multi-process mode is off.  Starts this process's writer thread
    if it does not run yet (a forked child starts its own).  Errors (say, the directory
    does not exist) are raised here, whereas the writer thread logs them.
    """
    if not enabled():
        return
    _start()
    _write()


def exported() -> None:
    """Called whenever an executor is exported: start the writer in multi-process mode."""
    if _writer_pid != os.getpid() and enabled():
        _start()


def _start() -> None:
    global _writer_pid, _hooks_registered
    with _lock:
        pid = os.getpid()
        if _writer_pid == pid:
            return
        _writer_pid = pid
        _bases.clear()
        _written.clear()
        if not _hooks_registered:
            _hooks_registered = True
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
            atexit.register(_at_exit)
        threading.Thread(
            target=_run, args=(pid,), name="executor-exporter-multiprocess", daemon=True
        ).start()


def _run(pid: int) -> None:
    global _failing
    # Write at once: a new process's pools (a respawned gunicorn worker's) show up
    # without waiting for its first request or a whole interval.  Runs while it is this
    # process's writer (tests reset _writer_pid to end it).
    while _writer_pid == pid:
        try:
            _write()
        except Exception:
            # Log once per run of failures, not every second.
            if not _failing:
                _log.exception("executor_exporter: writing to PROMETHEUS_MULTIPROC_DIR failed")
            _failing = True
        else:
            _failing = False
        time.sleep(FLUSH_INTERVAL)


def _at_exit() -> None:
    if _writer_pid == os.getpid():
        try:
            _write()
        except Exception:
            _log.exception("executor_exporter: last write to PROMETHEUS_MULTIPROC_DIR failed")


def _before_fork() -> None:
    global _lock_held_for_fork
    # Bounded: a fork never waits on us for long, whatever holds the lock.
    _lock_held_for_fork = _lock.acquire(timeout=2 * FLUSH_INTERVAL)


def _after_fork_in_parent() -> None:
    global _lock_held_for_fork
    if _lock_held_for_fork:
        _lock_held_for_fork = False
        _lock.release()


def _after_fork_in_child() -> None:
    global _lock, _lock_held_for_fork
    # Held by the forking thread, which is this one; a fresh lock is simpler.  The
    # parent's writer thread is not here: _writer_pid is not ours, so the next export or
    # flush starts our own (that check holds for a fork that skips these hooks, too).
    _lock = threading.Lock()
    _lock_held_for_fork = False


def _write() -> None:
    global _value_class
    with _lock:
        for collector in all_collectors():
            _seen.setdefault(id(collector), collector)
        merged: dict[_Key, float] = {}
        for collector in _seen.values():
            for key, (totals, layout) in collector.read().items():
                _add_samples(merged, key, totals, layout)
        if _value_class is None:
            _value_class = _mmap_value_class()
        for sample, value in merged.items():
            base = _bases.get(sample)
            if base is None:
                holder = _values.get(sample)
                if holder is None:
                    holder = _values[sample] = _new_value(sample)
                # A file left by an exited process that had our pid: counters go on
                # from its values, as prometheus_client's inc() does.  get() reads the
                # file of this pid (it reopens them after a fork).
                base = _bases[sample] = 0.0 if sample[0].type == "gauge" else holder.get()
            value += base
            if _written.get(sample) != value:
                _values[sample].set(value)
                _written[sample] = value


def _mmap_value_class() -> Any:
    # prometheus_client picked its value class when imported.  When that is already the
    # mmap class, share it: two classes would hold two handles on the same file, each
    # appending new keys where the other does, and would not share its lock.
    if getattr(values.ValueClass, "_multiprocess", False):
        return values.ValueClass
    return values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _new_value(key: _Key) -> Any:
    d, sample_name, labelnames, labelvalues = key
    # The names Counter, Gauge and Histogram use: a counter's family name has no _total.
    family = d.name[: -len("_total")] if d.type == "counter" else d.name
    mode = "" if d.type != "gauge" else "livemax" if d.name in _LIVEMAX else "livesum"
    return _value_class(
        d.type, family, sample_name, labelnames, labelvalues, d.help, multiprocess_mode=mode
    )


def _add_samples(
    merged: dict[_Key, float], key: tuple[str, str], t: Totals, layout: Layout
) -> None:
    """Add one group's totals into ``merged``, the way MultiProcessCollector merges."""

    def put(
        d: m.MetricDefinition,
        name: str,
        names: tuple[str, ...],
        vals: tuple[str, ...],
        value: float,
    ) -> None:
        k: _Key = (d, name, m.BASE_LABELS + names, key + vals)
        if d.name in _LIVEMAX:
            merged[k] = max(merged.get(k, value), value)
        else:
            merged[k] = merged.get(k, 0.0) + value

    for d, extra, value in group_points(t, layout):
        names = d.labels[2 : 2 + len(extra)]
        if not isinstance(value, tuple):
            put(d, d.name, names, extra, value)
            continue
        # Per-bucket counts, as Histogram writes them; the collector accumulates.
        bounds, counts, total = value
        for le, count in zip([*map(floatToGoString, bounds), "+Inf"], counts):
            put(d, d.name + "_bucket", (*names, "le"), (*extra, le), count)
        put(d, d.name + "_sum", names, extra, total)

"""Worker slots in shared memory, for process pools.

The parent allocates one block of doubles holding ``capacity`` slots (the layout of
``_layout``) and then the done ring (see ``_child``), before any worker starts, and hands
it to every worker through the pool's initializer.  A worker claims a free slot under a
cross-process lock when it starts and frees it when it exits normally, so the next worker
(``max_tasks_per_child``) continues the same counters.  The parent only reads, except for
the slot of a worker that died mid-task, which nobody else writes any more.
"""

from __future__ import annotations

import os
from typing import Any

from ._layout import OWNER, Layout

# Aligned 8-byte stores and loads are atomic on every platform CPython runs on, so a
# reader sees each double either before or after a write, never torn.


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie not yet reaped counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


# A memoryview of doubles; typed Any since typeshed types item stores on int views.
Slot = Any


def doubles(raw: Any) -> Slot:
    return memoryview(raw).cast("B").cast("d")


class SharedSlots:
    """The parent's view of a process pool's slots, and of the done ring after them."""

    __slots__ = ("_view", "capacity", "layout", "lock", "raw", "ring", "ring_size")

    def __init__(self, ctx: Any, layout: Layout, capacity: int, ring_size: int) -> None:
        self.layout = layout
        self.capacity = capacity
        self.ring_size = ring_size
        self.raw = ctx.RawArray("d", capacity * layout.width + ring_size)
        # Guards slot claims.  Under spawn a worker may still be starting (and open the
        # lock by name) after the executor object is gone, so something that lives as
        # long as the workers must hold it: the pool's manager thread once it runs (see
        # process), the executor until then.  This object keeps it only where the
        # manager thread cannot be found; None otherwise.
        self.lock: Any = ctx.Lock()
        self._view = doubles(self.raw)
        self.ring = self._view[capacity * layout.width :]

    def mark(self, seq: int) -> float:
        """The done-ring entry of call ``seq``: ``seq`` itself once a worker accounted for
        it, later a greater number (a later call sharing the entry), never a smaller one.
        Calls reach the workers in order, so an entry >= ``seq`` means the call reached a
        worker; an entry < ``seq`` means it has not (see ``_child``)."""
        return float(self.ring[seq % self.ring_size])

    def slot(self, index: int) -> Slot:
        """A writable view of slot ``index``."""
        w = self.layout.width
        return self._view[index * w : (index + 1) * w]

    def snapshot(self) -> list[list[float]]:
        """Copy the slots that were ever used."""
        view, w = self._view, self.layout.width
        out = []
        for i in range(self.capacity):
            values: list[float] = view[i * w : (i + 1) * w].tolist()
            if any(values):
                out.append(values)
        return out

    def live(self) -> int:
        """Number of slots held by a worker process that is still alive."""
        view, w = self._view, self.layout.width
        return sum(
            1
            for i in range(self.capacity)
            if view[i * w + OWNER] and pid_alive(int(view[i * w + OWNER]))
        )

    def indexes(self) -> range:
        return range(self.capacity)


def claim(raw: Any, lock: Any, layout: Layout, capacity: int) -> tuple[int, Slot] | None:
    """Child side: take a free slot (or one whose owner died) and mark it ours."""
    view = doubles(raw)
    w = layout.width
    pid = os.getpid()
    with lock:
        for i in range(capacity):
            owner = int(view[i * w + OWNER])
            if owner == 0 or (owner != pid and not pid_alive(owner)):
                view[i * w + OWNER] = float(pid)
                return i, view[i * w : (i + 1) * w]
    return None


def release(raw: Any, lock: Any, layout: Layout, index: int) -> None:
    """Child side, at a normal exit: give the slot back (its counters stay)."""
    view = doubles(raw)
    with lock:
        if int(view[index * layout.width + OWNER]) == os.getpid():
            view[index * layout.width + OWNER] = 0.0

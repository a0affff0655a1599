"""Per-thread slots: each thread that executes tasks writes to a slot of its own.

A thread claims a slot the first time it records something and gives it back when it
ends (the thread-local holding it is cleared then), so the next thread continues the
same counters: the number of slots stays at the peak number of threads, however many
come and go.  Claim and release are single list operations, atomic without a lock.
"""

from __future__ import annotations

import threading
import weakref

from ._layout import OWNER


class _Token:
    """Lives in a thread-local; its death tells that the thread has ended."""

    __slots__ = ("__weakref__",)


class ThreadSlots:
    """The slots of one executor instance's worker threads."""

    __slots__ = ("_free", "_owners", "_width", "local", "slots")

    def __init__(self, width: int) -> None:
        self._width = width
        #: ``local.slot`` is the calling thread's slot once claimed: hot paths read it
        #: inline and call get() only on AttributeError.
        self.local = threading.local()
        self._free: list[list[float]] = []
        # Keeps the weak references alive so that their callbacks run.
        self._owners: dict[int, weakref.ref[_Token]] = {}
        #: Every slot ever made, in use or free; the collector sums them all.
        self.slots: list[list[float]] = []

    def get(self) -> list[float]:
        """Return the calling thread's slot, claiming one on first use."""
        try:
            slot: list[float] = self.local.slot
        except AttributeError:
            slot = self._claim()
        return slot

    def _claim(self) -> list[float]:
        try:
            slot = self._free.pop()
        except IndexError:
            slot = [0.0] * self._width
            self.slots.append(slot)
        slot[OWNER] = 1.0
        token = _Token()
        free = self._free
        owners = self._owners

        def release(ref: weakref.ref[_Token], slot: list[float] = slot) -> None:
            slot[OWNER] = 0.0
            owners.pop(id(ref), None)
            free.append(slot)

        ref = weakref.ref(token, release)
        owners[id(ref)] = ref
        self.local.token = token
        self.local.slot = slot
        return slot

    def live(self) -> int:
        """Return the number of threads holding a slot now."""
        return sum(1 for slot in list(self.slots) if slot[OWNER])

    def snapshot(self) -> list[list[float]]:
        """Copy every slot (each copy is taken whole, under the GIL)."""
        return [slot[:] for slot in list(self.slots)]

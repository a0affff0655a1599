"""Where each number lives in a worker slot.

A *slot* is a flat array of floats written by exactly one worker (a thread, or a child
process through shared memory) and read by the collector at scrape time.  One writer per
slot is what lets the hot path use plain ``+=`` with no lock; summing the slots happens
only when somebody asks.  Slots are reused by the next worker once their writer is gone,
so their counters only ever grow.

Histogram buckets are stored per bucket (not cumulative): an observation is one
increment, and the count is the sum of the buckets, so count and buckets never disagree.
The hot paths find a bucket with ``0 if x <= bounds[0] else bisect_left(bounds, x)``: a
comparison in place of a call for the values that fall in the first bucket, the short
waits and tasks where the recording's cost shows (a fifth of it, measured on 3.11).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from .metrics import DEFAULT_BUCKETS

# Fixed offsets.  OWNER: 0 when free, else the owner's pid (processes) or 1 (threads).
OWNER = 0
INITIALIZED = 1  # workers whose initializer completed while owning this slot
RUN_START = 2  # time.monotonic() at which the in-flight item started; 0.0 when idle
RUN_SEQ = 3  # sequence number of the call (task or map chunk) being executed
CHUNK_BASE = 4  # tasks this slot had started when RUN_SEQ began (process pools)
ABANDONED = 5  # items failed without starting, recorded as failed with duration 0
WAIT_SUM = 6
COMPLETED_SUM = 7
FAILED_SUM = 8
_FIXED = 9

# Submitting threads count what they submitted in slots of their own (width 2).
SUBMITTED = 1
SUBMITTER_WIDTH = 2


def validate_buckets(buckets: Iterable[float] | None, what: str) -> tuple[float, ...]:
    """Return sorted finite bucket bounds, or raise a clear error.

    A trailing ``+Inf`` is accepted and dropped: it is always implied.
    """
    if buckets is None:
        return DEFAULT_BUCKETS
    if isinstance(buckets, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of numbers, not {type(buckets).__name__}")
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a sequence of numbers") from None
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds:
        raise ValueError(f"{what} needs at least one finite bound")
    if any(math.isnan(b) or math.isinf(b) for b in bounds):
        raise ValueError(f"{what} must be finite (+Inf is implied)")
    if any(b <= 0 for b in bounds):
        raise ValueError(f"{what} must be positive (waits and durations are >= 0)")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"{what} must be strictly increasing")
    return tuple(bounds)


class Layout:
    """Offsets of the histogram buckets for one pair of bucket lists."""

    __slots__ = ("completed", "duration_bounds", "failed", "wait", "wait_bounds", "width")

    def __init__(self, wait_bounds: Sequence[float], duration_bounds: Sequence[float]) -> None:
        self.wait_bounds = tuple(wait_bounds)
        self.duration_bounds = tuple(duration_bounds)
        # Each histogram has one more bucket than bounds: the +Inf one.
        self.wait = _FIXED
        self.completed = self.wait + len(self.wait_bounds) + 1
        self.failed = self.completed + len(self.duration_bounds) + 1
        self.width = self.failed + len(self.duration_bounds) + 1

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Layout)
            and self.wait_bounds == other.wait_bounds
            and self.duration_bounds == other.duration_bounds
        )

    def __hash__(self) -> int:
        return hash((self.wait_bounds, self.duration_bounds))

    def __reduce__(self) -> tuple[type[Layout], tuple[tuple[float, ...], tuple[float, ...]]]:
        return (Layout, (self.wait_bounds, self.duration_bounds))

"""The guard every read-through cache emptied by events uses against a read overtaken by a change.

A service instance caches what it reads from the store and drops an entry when an event says it
changed (a change made by this instance or by another replica). A read that was in flight when
the drop arrived may hold the value from before the change: it may answer its caller, but caching
it would let the stale copy outlive the event that dropped it, for as long as the entry lives.
"""

from __future__ import annotations


class Drops:
    """Counts drops. A read notes `mark()` before it goes to the store and caches its result only
    if `unchanged(mark)`: no drop (of any entry, which errs on the side of reading again) came
    in between. Every change to a cache that did not come from its own read calls `note()`."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    def note(self) -> None:
        self._count += 1

    def mark(self) -> int:
        return self._count

    def unchanged(self, mark: int) -> bool:
        return mark == self._count

"""Long work in short turns: give the event loop back between items once a turn is used up.

One event loop serves every pool, the watches, the Lease renewals and the probes, so a batch
of decisions (a pool's waiters re-decided when capacity frees, each maybe parsing a large
spec) or a burst of buffered watch events must not run in one go: `respool_event_loop_lag_
seconds` showed single callbacks of 0.1-0.6 s with 100 hostile reservations present
(docs/operator.md, "Hostile tenants"). Between items, a `Turn` yields once the work done
since the last yield took `TURN_SECONDS`.

The time comes from the clock the caller is given (the port's monotonic clock): in the
deterministic simulation that clock does not move while code runs, so no turn ever ends there
and every schedule replays exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

#: The longest stretch of work between two chances for the rest of the loop to run (seconds).
TURN_SECONDS = 0.005


class Turn:
    """Counts the time spent in `work()` blocks; `next_item()` yields once it reaches the
    turn's length. Only the work is counted, never time spent waiting (an await inside the
    batch, for the next watch event): the loop ran other things then already."""

    def __init__(self, clock: Callable[[], float], length: float = TURN_SECONDS) -> None:
        self._clock = clock
        self._length = length
        self._spent = 0.0

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        began = self._clock()
        try:
            yield
        finally:
            self._spent += self._clock() - began

    async def next_item(self) -> bool:
        """Call before each item: yields to the loop if this turn is used up; True if it
        yielded (anything may have changed meanwhile)."""
        if self._spent < self._length:
            return False
        await asyncio.sleep(0)
        self._spent = 0.0
        return True

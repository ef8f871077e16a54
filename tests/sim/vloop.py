"""An asyncio event loop on a virtual clock: deterministic, and as fast as the CPU allows.

Nothing in the simulation does real I/O, so whenever no callback is ready the loop's selector
is asked to wait until the next timer - and the virtual clock simply jumps there. Given the
same program and the same seeds, every run executes the same callbacks in the same order.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

T0 = 1_900_000_000.0  # the virtual epoch: 2030-03-17T17:46:40Z


class VirtualClock:
    """`now`: seconds since the start (what the loop schedules on, precise near zero);
    `wall()`: epoch seconds (what the operator reads as its clock)."""

    def __init__(self, epoch: float = T0) -> None:
        self.now = 0.0
        self.epoch = epoch

    def wall(self) -> float:
        return self.epoch + self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the program waits for something that never comes."""


SPIN_LIMIT = 200_000


class Spin(RuntimeError):
    """The program keeps the loop busy without ever waiting: a busy loop in real time."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise Deadlock("the event loop would wait forever")
        if timeout > 0:
            self.clock.advance(timeout)
            self.busy = 0
        else:
            # Callbacks ready again and again while time stands still: in real time that is a
            # busy loop burning a core (or a livelock); say so instead of running forever.
            self.busy += 1
            if self.busy > SPIN_LIMIT:
                self.busy = 0
                raise Spin(f"the event loop ran {SPIN_LIMIT} rounds at t={self.clock.now:.3f} "
                           "without time moving on (a busy loop)")
        return []

    busy = 0


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


def run(clock: VirtualClock, main: Any) -> Any:
    """Run coroutine `main` to completion on a fresh virtual loop."""
    loop = VirtualLoop(clock)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        # Whatever is still pending (watches, a crashed incarnation's leftovers) is cancelled
        # and allowed to finish, so that nothing runs on a closed loop.
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()

"""turns.Turn: long work is given back to the event loop in turns, counted in work time only."""

from __future__ import annotations

import asyncio

from respool.controller.turns import Turn


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_yields_once_the_work_of_a_turn_is_spent() -> None:
    clock = Clock()
    turn = Turn(clock, length=0.005)
    order: list[str] = []

    async def batch() -> None:
        for item in range(6):
            if await turn.next_item():
                order.append("yielded")
            with turn.work():
                clock.now += 0.002  # each item works 2 ms
            order.append(f"item{item}")

    async def other() -> None:
        order.append("other ran")

    async def main() -> None:
        await asyncio.gather(batch(), other())

    asyncio.run(main())
    # 3 items (6 ms) use up the first turn; the other task runs before the fourth.
    assert order[:6] == ["item0", "item1", "item2", "other ran", "yielded", "item3"]
    assert order.count("yielded") == 1


def test_time_spent_waiting_is_not_work() -> None:
    """A clock that moves only between items (the simulation's virtual clock, or an await
    inside the batch) never ends a turn: the schedule replays as before."""
    clock = Clock()
    turn = Turn(clock, length=0.005)

    async def batch() -> int:
        yielded = 0
        for _ in range(100):
            yielded += await turn.next_item()
            clock.now += 1.0  # time passes outside the work
            with turn.work():
                pass
        return yielded

    assert asyncio.run(batch()) == 0

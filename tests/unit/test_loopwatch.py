"""respool run --slow-callback-ms: a callback that holds the loop is logged with where it was."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from respool.controller.loopwatch import SlowCallbackWatch


def hog_the_loop(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def holder() -> None:
    await asyncio.sleep(0)
    hog_the_loop(0.2)
    await asyncio.sleep(0)


async def polite() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_callback_over_the_threshold_is_logged_with_its_task_and_stack(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = SlowCallbackWatch(0.05)
    watch.install()
    try:
        with caplog.at_level(logging.WARNING, logger="respool.loopwatch"):
            async def main() -> None:
                await asyncio.gather(asyncio.create_task(holder(), name="the-holder"),
                                     asyncio.create_task(polite(), name="the-polite-one"))

            asyncio.run(main())
    finally:
        watch.uninstall()
    held = [r.getMessage() for r in caplog.records if "event loop held" in r.getMessage()]
    assert len(held) == 1, held
    assert "'the-holder' (holder)" in held[0]
    assert "hog_the_loop" in held[0]  # the sampled stack names where the time went
    assert "the-polite-one" not in "".join(held)


def test_uninstall_restores_asyncio() -> None:
    original = asyncio.events.Handle._run
    watch = SlowCallbackWatch(0.05)
    watch.install()
    assert asyncio.events.Handle._run is not original
    watch.uninstall()
    assert asyncio.events.Handle._run is original

"""What holds the event loop: each callback over a threshold, timed, with where it was.

`respool run --slow-callback-ms N` (off by default) times every callback the loop runs (a
task's step, a timer, an I/O callback) and, for one that runs longer than N ms, logs how long,
what it was (the task's name and coroutine) and where its thread was while it ran past N ms -
a stack sampled by a watchdog thread, the way py-spy would see it, so a pure-Python hot spot
shows with its file and line - and each pass of the cyclic garbage collector over N ms (it
stops everything while it runs). The loop's lag itself is always measured
(`respool_event_loop_lag_seconds`); this says what caused it.

Why not asyncio's debug mode (PYTHONASYNCIODEBUG): it names the slow handle but not where it
spent its time, and its coroutine-origin tracking slows every await; this costs two clock
reads per callback and a thread that wakes every N/2 ms.
"""

from __future__ import annotations

import asyncio.events
import collections
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

logger = logging.getLogger("respool.loopwatch")

#: How many frames of a sampled stack are logged (innermost last).
STACK_DEPTH = 14


def describe(handle: Any) -> str:
    """What a Handle runs: the task and its coroutine for a task's step, else the callback."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        name = getattr(coro, "__qualname__", None) or repr(coro)
        return f"task {owner.get_name()!r} ({name})"
    return repr(callback)


class SlowCallbackWatch:
    """Installed once per process (it wraps asyncio's Handle._run for every loop in it)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._thread_id = threading.get_ident()
        self._running: tuple[float, Any] | None = None
        self._samples: collections.Counter[str] = collections.Counter()
        self._first_stack = ""
        self._stop = threading.Event()
        self._gc_began = 0.0
        self._original_run = asyncio.events.Handle._run

    def install(self) -> None:
        watch = self
        original = self._original_run
        self._thread_id = threading.get_ident()

        def _run(handle: asyncio.events.Handle) -> None:
            if threading.get_ident() != watch._thread_id:
                original(handle)  # another thread's loop (the dashboard's): not watched
                return
            began = time.perf_counter()
            watch._running = (began, handle)
            try:
                original(handle)
            finally:
                watch._running = None
                held = time.perf_counter() - began
                if held > watch.threshold:
                    watch._report(handle, held)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self._gc_timer)
        threading.Thread(target=self._sample, name="respool-loopwatch", daemon=True).start()
        logger.info("timing every event loop callback; logging those over %.0f ms",
                    self.threshold * 1000)

    def _gc_timer(self, phase: str, info: dict[str, Any]) -> None:
        """The cyclic garbage collector stops everything while it runs: time each pass."""
        if phase == "start":
            self._gc_began = time.perf_counter()
            return
        held = time.perf_counter() - self._gc_began
        if held > self.threshold:
            logger.warning("garbage collection of generation %s took %.1f ms (%s collected)",
                           info.get("generation"), held * 1000, info.get("collected"))

    def uninstall(self) -> None:
        self._stop.set()
        if self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
        asyncio.events.Handle._run = self._original_run  # type: ignore[method-assign]

    def _sample(self) -> None:
        """While a callback runs past the threshold, sample where the loop's thread is."""
        interval = max(0.001, self.threshold / 2)
        sampled: Any = None
        while not self._stop.wait(interval):
            running = self._running
            if running is None or time.perf_counter() - running[0] < self.threshold:
                continue
            frame = sys._current_frames().get(self._thread_id)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-STACK_DEPTH:]
            innermost = stack[-1]
            self._samples[f"{innermost.filename}:{innermost.lineno} {innermost.name}"] += 1
            if sampled is not running:
                sampled = running
                self._first_stack = "".join(traceback.format_list(stack))

    def _report(self, handle: Any, held: float) -> None:
        samples, self._samples = self._samples, collections.Counter()
        stack, self._first_stack = self._first_stack, ""
        where = ", ".join(f"{n}x {place}" for place, n in samples.most_common(3)) or "-"
        logger.warning("event loop held %.1f ms by %s; sampled at: %s\n%s", held * 1000,
                       describe(handle), where, stack.rstrip())

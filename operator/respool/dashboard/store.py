"""The dashboard's picture of the cluster: pools and reservations kept current by list+watch.

One thread per kind lists (in pages) and then watches, through a `DataSource` (the client's
`KubeAPI` with the user's kubeconfig, or, served by the operator, `RestSource` with the
operator's credentials), and so with the permissions of whoever it runs as. Every change is handed to the event loop, which
owns the `Store`: it updates the views and sends the change to every connected browser. A
browser that connects gets a snapshot first, then the changes after it, on one stream, so
nothing falls between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from respool.dashboard.source import DataSource, Object
from respool.dashboard.views import View, pool_view, reservation_key, reservation_view
from respool.errors import (
    POOLS,
    RESERVATIONS,
    AccessDenied,
    NamespaceForbidden,
    ResourceVersionExpired,
    RespoolError,
)

logger = logging.getLogger("respool.dashboard")

# A browser that falls this far behind is dropped; its EventSource reconnects and starts
# again from a snapshot, instead of the dashboard buffering without bound.
QUEUE_LIMIT = 20_000
# Watch again after a failure after this long, doubling up to the maximum.
RETRY_FIRST, RETRY_MAX = 0.5, 15.0


@dataclass
class Kind:
    """What the store knows of one kind of object."""

    name: str  # "pool" or "reservation"
    view: Callable[[Object], View]
    key: Callable[[Object], str]
    items: dict[str, View] = field(default_factory=dict)
    synced: bool = False
    error: str = ""
    scope: str = ""  # "all namespaces", "namespace x", "cluster"


def _pool_key(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class Store:
    """Views of every pool and reservation the user may see, and the browsers following them.

    Only the event loop's thread touches it (the watch threads go through `post`)."""

    def __init__(self) -> None:
        self.kinds = {
            "pool": Kind("pool", pool_view, _pool_key),
            "reservation": Kind("reservation", reservation_view, reservation_key),
        }
        self.subscribers: set[asyncio.Queue[str]] = set()

    # -- from the watch threads (on the loop) ----------------------------------------------

    def replace(self, kind: str, views: dict[str, View], scope: str) -> None:
        """A fresh listing: the set of objects of `kind` is exactly this."""
        known = self.kinds[kind]
        known.items = views
        known.synced, known.error, known.scope = True, "", scope
        self._send({"type": "snapshot", **self.snapshot()})

    def apply(self, kind: str, change: str, key: str, view: View) -> None:
        known = self.kinds[kind]
        if change == "DELETED":
            if known.items.pop(key, None) is not None:
                self._send({"type": "deleted", "kind": kind, "key": key})
            return
        if known.items.get(key) == view:
            return  # a change the page does not show (e.g. managedFields)
        known.items[key] = view
        self._send({"type": "changed", "kind": kind, "key": key, "view": view})

    def fail(self, kind: str, message: str) -> None:
        known = self.kinds[kind]
        if known.error != message:
            known.error = message
            self._send({"type": "status", **self.health()})

    # -- to the browsers --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            kind.name: {"synced": kind.synced, "error": kind.error, "scope": kind.scope}
            for kind in self.kinds.values()
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": list(self.kinds["pool"].items.values()),
            "reservations": list(self.kinds["reservation"].items.values()),
            "health": self.health(),
        }

    def subscribe(self) -> asyncio.Queue[str]:
        """A queue that starts with a snapshot and then receives every change."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        queue.put_nowait(_frame({"type": "snapshot", **self.snapshot()}))
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)

    def _send(self, message: dict[str, Any]) -> None:
        if not self.subscribers:
            return
        frame = _frame(message)
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                # Too far behind: end its stream (the browser reconnects to a snapshot).
                self.subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        queue.get_nowait()
                queue.put_nowait(CLOSE)


CLOSE = ""  # the frame that ends a browser's stream


def _frame(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class Watcher:
    """List and watch one kind in a thread, handing what it sees to the store on `loop`."""

    def __init__(
        self,
        api: DataSource,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        namespace: str | None,
        *,
        page_size: int = 500,
        watch_timeout: int = 240,
    ) -> None:
        self.api, self.store, self.loop = api, store, loop
        self.kind = kind
        self.plural = POOLS if kind == "pool" else RESERVATIONS
        # None: every namespace (falls back to the kubeconfig's namespace when forbidden).
        self.namespace = namespace
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _post(self, method: Callable[..., None], *args: Any) -> None:
        if not self.stopping.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(method, *args)

    def _scope(self) -> str:
        if self.kind == "pool":
            return "cluster"
        return "all namespaces" if self.namespace is None else f"namespace {self.namespace}"

    def _list(self) -> str:
        # Views are made page by page here, so the full objects of a large listing are never
        # all held at once.
        known = self.store.kinds[self.kind]
        views: dict[str, View] = {}
        version = ""
        for page, page_version in self.api.list_pages(self.plural, self.namespace, page_size=self.page_size):
            views.update((known.key(obj), known.view(obj)) for obj in page)
            version = page_version
        self._post(self.store.replace, self.kind, views, self._scope())
        return version

    def _run(self) -> None:
        delay = RETRY_FIRST
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    version = self._list()
                    delay = RETRY_FIRST
                for change, obj in self.api.watch(
                    self.plural, self.namespace, version, timeout=self.watch_timeout
                ):
                    if self.stopping.is_set():
                        return
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if change != "BOOKMARK":
                        known = self.store.kinds[self.kind]
                        self._post(self.store.apply, self.kind, change, known.key(obj), known.view(obj))
            except ResourceVersionExpired:
                version = ""  # list again
            except (AccessDenied, NamespaceForbidden) as exc:
                if self.kind == "reservation" and self.namespace is None:
                    # Like kubectl: what the user may not list cluster-wide, show for the
                    # kubeconfig's namespace.
                    self.namespace = self.api.default_namespace
                    logger.warning("%s; showing namespace %r only", exc, self.namespace)
                    version = ""
                    continue
                self._failed(exc, delay)
                delay = min(RETRY_MAX, delay * 2)
                version = ""
            except RespoolError as exc:
                self._failed(exc, delay)
                delay = min(RETRY_MAX, delay * 2)
                version = ""
            except Exception as exc:  # a bug must not end the watch for good
                logger.exception("watching %s failed", self.plural)
                self._failed(exc, delay)
                delay = min(RETRY_MAX, delay * 2)
                version = ""

    def _failed(self, exc: BaseException, delay: float) -> None:
        message = f"{self.plural}: {exc}"
        logger.warning("%s (retrying in %.1fs)", message, delay)
        self._post(self.store.fail, self.kind, message)
        self.stopping.wait(delay)

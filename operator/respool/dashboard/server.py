"""The dashboard's web server: the page and its assets, one event stream, and details on demand.

Read-only: it only ever answers GET, and reads the cluster through a `DataSource` as whoever
runs it (`respool dashboard`: the user's kubeconfig, so it shows what kubectl would show them;
`respool run --dashboard-port`: the operator's own credentials). Routes:

- ``/``, ``/static/...``: the page (from the package's ``static/`` folder);
- ``/api/stream``: server-sent events, a snapshot first, then every change;
- ``/api/state``: the same snapshot once, as JSON;
- ``/api/reservations/{namespace}/{name}``: the full object and its Events;
- ``/api/pools/{name}``: the full pool object;
- ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from respool.dashboard.source import KIND_RESERVATION, DataSource
from respool.dashboard.store import CLOSE, Store, Watcher
from respool.errors import (
    AccessDenied,
    NamespaceForbidden,
    PoolNotFound,
    ReservationNotFound,
    RespoolError,
)

logger = logging.getLogger("respool.dashboard")

STATIC = Path(str(resources.files("respool.dashboard") / "static"))
KEEPALIVE_SECONDS = 15.0
# The page, its script and its styles come from this server only: no CDN, no inline code.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}

STORE_KEY = web.AppKey("store", Store)
API_KEY = web.AppKey[DataSource]("api")


def _is_loopback(address: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    return address == "localhost"


def _host_guard(address: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """On a loopback address, answer only requests addressed to a loopback name: a web page
    elsewhere cannot then reach this server (and the user's cluster) by DNS rebinding."""
    loopback = _is_loopback(address)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if loopback and (request.url.host or "").lower() not in LOCAL_NAMES:
            raise web.HTTPForbidden(text=f"this dashboard answers only on {address}\n")
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        response = await handler(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return guard


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _health(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    health = store.health()
    synced = all(part["synced"] for part in health.values())
    return web.json_response(health, status=200 if synced else 503)


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE_KEY].snapshot())


async def _stream(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                 "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue = store.subscribe()
    try:
        closed = False
        while not closed:
            try:
                frame = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            # Send what has piled up in one write (a burst of changes is one packet).
            frames: list[str] = []
            while True:
                if frame == CLOSE:
                    closed = True
                    break
                frames.append(frame)
                if queue.empty() or len(frames) >= 500:
                    break
                frame = queue.get_nowait()
            if frames:
                await response.write("".join(f"data: {f}\n\n" for f in frames).encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.unsubscribe(queue)
    return response


def _error(exc: RespoolError) -> web.Response:
    status = 404 if isinstance(exc, ReservationNotFound | PoolNotFound) else \
        403 if isinstance(exc, AccessDenied | NamespaceForbidden) else 502
    return web.json_response({"error": str(exc)}, status=status)


async def _reservation(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        obj = await asyncio.to_thread(api.get_reservation, namespace, name)
    except RespoolError as exc:
        return _error(exc)
    events: list[dict[str, Any]] | None
    events_error = ""
    try:
        events = await asyncio.to_thread(api.list_events, namespace, KIND_RESERVATION, name)
    except RespoolError as exc:  # may read the reservation but not its Events
        events, events_error = None, str(exc)
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("managedFields", None)
    obj["metadata"] = metadata
    return web.json_response({"object": obj, "events": events, "eventsError": events_error})


async def _pool(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    try:
        obj = await asyncio.to_thread(api.get_pool, request.match_info["name"])
    except RespoolError as exc:
        return _error(exc)
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("managedFields", None)
    obj["metadata"] = metadata
    return web.json_response({"object": obj})


def build_app(api: DataSource, *, namespace: str | None, address: str = "127.0.0.1") -> web.Application:
    """The application; its start-up begins watching (`namespace` None: all namespaces the
    user may list, else the kubeconfig's namespace)."""
    app = web.Application(middlewares=[_host_guard(address)])
    store = Store()
    app[STORE_KEY] = store
    app[API_KEY] = api

    async def watching(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        watchers = [
            Watcher(api, store, loop, "pool", None),
            Watcher(api, store, loop, "reservation", namespace),
        ]
        for watcher in watchers:
            watcher.start()
        yield
        for watcher in watchers:
            watcher.stop()

    app.cleanup_ctx.append(watching)
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/stream", _stream)
    app.router.add_get("/api/reservations/{namespace}/{name}", _reservation)
    app.router.add_get("/api/pools/{name}", _pool)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def serve(app: web.Application, address: str, port: int,
                ready: Callable[[str], None] | None = None) -> None:
    """Run until cancelled; `ready` gets the URL once the port is open."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    try:
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        host = f"[{address}]" if ":" in address else address
        if ready is not None:
            ready(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

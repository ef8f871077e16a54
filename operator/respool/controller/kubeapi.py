"""A small async REST layer for the few Kubernetes calls the pool actors make themselves.

kopf owns the watches; the actors need to write the status of *any* reservation of their pool
(a release lets a Pending one in), post Events and edit finalizers. The sync `kubernetes`
client would need threads and costs tens of MB of RSS, so this module talks to the API server
with aiohttp (already a kopf dependency), using the same `kopf.ConnectionInfo` that kopf logged
in with (see `respool.controller.handlers.login`).

Only what the controller needs: GET/LIST (paginated), JSON merge-patch and JSON patch, POST.
Transient failures (connection errors, 429, 5xx) are retried a few times with backoff; other
HTTP errors surface as `ApiError` with the status code and the server's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

logger = logging.getLogger(__name__)

GROUP = "respool.io"
VERSION = "v1alpha1"
POOLS = "resourcepools"
RESERVATIONS = "resourcereservations"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
RETIRED_SESSION_GRACE = 60.0
"""Seconds a session replaced after a 401 stays open for the requests still using it."""
# How etcd and its gRPC client word a refusal of an object too large to store.
_TOO_LARGE_MARKS = ("request is too large", "code = ResourceExhausted")
# Answers that say the request was not applied (too many requests, not ready to serve).
_NOT_APPLIED_STATUSES = frozenset({429, 503})


class ApiError(Exception):
    """An HTTP error answer from the API server (after transient retries)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        # 409 Conflict (resourceVersion/UID preconditions), 422 for a failed JSON-patch `test`.
        return self.status in (409, 422)

    @property
    def too_large(self) -> bool:
        """The object would exceed what the API server or etcd stores. Past etcd's request
        limit (1.5 MiB) the answer is a 500 "etcdserver: request is too large", past the gRPC
        message limit between them (2 MiB) a 500 "rpc error: code = ResourceExhausted ...
        message larger than max" (both seen on the real server); either is as definite as a
        413: the write was not applied, and repeating it can never succeed."""
        if self.status == 413:
            return True
        return self.status == 500 and any(mark in self.message for mark in _TOO_LARGE_MARKS)

    @property
    def unavailable(self) -> bool:
        """The API server was unreachable or failing (after the transient retries): the
        request may or may not have been applied. Anything else is a definite answer."""
        if self.too_large:
            return False
        return self.status == 0 or self.status in _TRANSIENT_STATUSES


def pool_path(name: str | None = None, *, status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}/{POOLS}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
        if status:
            path += "/status"
    return path


def reservation_path(
    namespace: str | None = None, name: str | None = None, *, status: bool = False
) -> str:
    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{RESERVATIONS}"
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{RESERVATIONS}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
        if status:
            path += "/status"
    return path


class KubeApi:
    """One aiohttp session to the API server, built from kopf's connection info."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        max_connections: int = 64,
        timeout: float = 30.0,
        retries: int = 4,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
    ) -> None:
        self.server = info.server.rstrip("/")
        # Reads the credentials again (a service-account token is rotated in place by the
        # kubelet; a kubeconfig may be refreshed): used once per request answered 401.
        self._relogin = relogin
        self.default_namespace = info.default_namespace or "default"
        self._info = info
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._retired: set[aiohttp.ClientSession] = set()  # replaced by log_in_again
        # Requests beyond this many wait here, before their timeout starts (aiohttp would
        # count the wait for a pooled connection against the request's timeout).
        self._slots = asyncio.Semaphore(max_connections)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = dict(self._info.as_http_headers())
            headers["User-Agent"] = "respool-operator"
            headers["Accept"] = "application/json"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ssl=self._info.as_ssl_context()
                ),
                headers=headers,
                timeout=self._timeout,
                trust_env=self._info.trust_env,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for retired in list(self._retired):
            await self._close_retired(retired)

    async def _close_retired(self, session: aiohttp.ClientSession) -> None:
        self._retired.discard(session)
        await session.close()

    async def log_in_again(self, rejected: kopf.ConnectionInfo | None = None) -> bool:
        """After a 401 on the credentials `rejected` (default: the current ones): take fresh
        credentials (if this client knows how) and a new session. False when it cannot, or
        they are what they were (no point retrying). True at once when another request has
        already replaced the rejected credentials (many requests meet a rotation together)."""
        if rejected is not None and rejected is not self._info:
            return True
        if self._relogin is None:
            return False
        try:
            info = self._relogin()
        except Exception as exc:  # kopf.LoginError, unreadable files: keep the old ones
            logger.warning("logging in again after a 401 failed: %s", exc)
            return False
        if info.server.rstrip("/") != self.server:
            logger.warning("new credentials name another API server (%s); not switching", info.server)
            return False
        changed = info != self._info
        self._info = info
        # The next request opens a session with the new credentials; requests still in flight
        # finish on the old one, closed once they have had time to (or by close()).
        retired, self._session = self._session, None
        if retired is not None:
            self._retired.add(retired)
            asyncio.get_running_loop().call_later(
                RETIRED_SESSION_GRACE, lambda: asyncio.ensure_future(self._close_retired(retired)))
        if changed:
            logger.info("API server answered 401: logged in again with fresh credentials")
        return changed

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Send one request; retry transient failures; return the decoded JSON answer.

        `idempotent=False` (a POST with a generated name): retried only when the server surely
        did not apply it (no connection, 429, 503) - resending one whose answer was lost would
        create a second object."""
        url = self.server + path
        if params:
            url += "?" + urlencode(params)
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else None
        delay = 0.2
        credentials = self._info
        logged_in_again = False  # after the first 401, once
        for attempt in range(self._retries + 1):
            session = self._ensure_session()  # a new one after anyone's log_in_again
            began = time.monotonic()
            try:
                async with self._slots, session.request(method, url, data=data,
                                                        headers=headers) as response:
                    text = await response.text()
                    logger.debug("%s %s -> %s in %.0f ms", method, path, response.status,
                                 (time.monotonic() - began) * 1000)
                    if response.status < 400:
                        return json.loads(text) if text else {}
                    if (response.status == 401 and not logged_in_again
                            and attempt < self._retries):
                        # Not applied (authentication comes first): safe to send again.
                        logged_in_again = True
                        if await self.log_in_again(credentials):
                            credentials = self._info
                            continue
                    error = _api_error(response.status, text)
                    retryable = _TRANSIENT_STATUSES if idempotent else _NOT_APPLIED_STATUSES
                    if (response.status in retryable and not error.too_large
                            and attempt < self._retries):
                        retry_after = response.headers.get("Retry-After")
                        wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                        logger.debug("%s %s: HTTP %s, retrying in %.1fs", method, path,
                                     response.status, wait)
                        await asyncio.sleep(wait)
                        delay = min(delay * 2, 5.0)
                        continue
                    raise error
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Refused, reset, or cut mid-answer (an API server restarting): unknown outcome.
                never_sent = isinstance(exc, aiohttp.ClientConnectorError)
                if attempt >= self._retries or not (idempotent or never_sent):
                    raise ApiError(0, f"{type(exc).__name__}: {exc}", "Unreachable") from exc
                logger.debug("%s %s: %s, retrying in %.1fs", method, path, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable: the retry loop always returns or raises")

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def list_items(self, path: str, *, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
        """Yield every item of a collection, paginated so a huge list never sits in one answer."""
        token = ""
        while True:
            params = {"limit": str(page_size)}
            if token:
                params["continue"] = token
            answer = await self.request("GET", path, params=params)
            for item in answer.get("items") or []:
                yield item
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # A fixed name makes a resend harmless (409 AlreadyExists); a generated one does not.
        named = bool((body.get("metadata") or {}).get("name"))
        return await self.request("POST", path, body=body, idempotent=named)


def _api_error(status: int, text: str) -> ApiError:
    try:
        payload = json.loads(text)
    except ValueError:
        return ApiError(status, text.strip()[:500])
    if isinstance(payload, dict):
        return ApiError(status, str(payload.get("message", "")), str(payload.get("reason", "")))
    return ApiError(status, text.strip()[:500])


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


async def watch_events(
    api: KubeApi, path: str, resource_version: str, *, timeout_seconds: int = 300,
    params: Mapping[str, str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the raw watch events of a collection from `resource_version` (bookmarks too).

    Ends normally when the server closes the stream (reconnect with the last version seen);
    raises WatchExpired when the version is too old (relist), ApiError for other errors."""
    session = api._ensure_session()
    query = {**(params or {}), "watch": "1", "resourceVersion": resource_version,
             "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
    url = f"{api.server}{path}?{urlencode(query)}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 30)
    async with session.get(url, timeout=timeout) as response:
        if response.status == 410:
            raise WatchExpired(path)
        if response.status == 401:
            # The caller reconnects after an error: let it do so with fresh credentials.
            await api.log_in_again()
        if response.status >= 400:
            raise _api_error(response.status, await response.text())
        # One event per line. The pieces of a line are joined once it is complete: appending
        # each chunk to a buffer and searching all of it again was quadratic in the line, and
        # an object near etcd's limit (a maximal spec.config, echoed to status) is a line of
        # a megabyte or more arriving in many chunks.
        pieces: list[bytes] = []
        async for chunk in response.content.iter_any():
            begin = 0
            while (end := chunk.find(b"\n", begin)) >= 0:
                pieces.append(chunk[begin:end])
                begin = end + 1
                line = b"".join(pieces)
                pieces.clear()
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except RecursionError:
                    # Nested past even `respool run`'s recursion limit: this one object
                    # cannot be read, but the stream goes on (breaking it would re-read the
                    # same event for ever, and every other object would go unseen).
                    logger.error("watch of %s: an object nested too deep to read was skipped "
                                 "(%d bytes)", path, len(line))
                    continue
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise WatchExpired(path)
                    raise ApiError(int(status.get("code") or 500), str(status.get("message")),
                                   str(status.get("reason") or ""))
                yield event
            if begin < len(chunk):
                pieces.append(chunk[begin:])

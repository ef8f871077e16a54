"""The dashboard's `DataSource` for `respool run --dashboard-port`: no Kubernetes client.

The operator's image does without the official Kubernetes client (the ``client`` extra), so the
dashboard it serves reads the API server with the standard library's HTTP client, logged in as
the operator is (`respool.controller.handlers.connection_info`: in a Pod its ServiceAccount, at
the API server's KUBERNETES_SERVICE_HOST:PORT; elsewhere the kubeconfig, read by kopf). It reads
with exactly the operator's permissions. A 401 (a rotated service-account token) logs in again
once per request; error answers become the client's errors (`respool.errors.translate`).

Blocking calls, as the dashboard makes them from its watch threads and `asyncio.to_thread`.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import kopf

from respool import GROUP, VERSION
from respool.errors import (
    ClusterUnreachable,
    ResourceVersionExpired,
    RespoolError,
    translate,
    watch_change,
)

logger = logging.getLogger("respool.dashboard")

Object = dict[str, Any]


class RestSource:
    """Reads pools, reservations and Events over plain HTTPS with kopf's `ConnectionInfo`."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.request_timeout = request_timeout
        self._relogin = relogin
        self._lock = threading.Lock()  # the watch threads and request threads share the login
        self._use(info)

    def _use(self, info: kopf.ConnectionInfo) -> None:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=_ssl_context(info))]
        if not info.trust_env:
            handlers.append(urllib.request.ProxyHandler({}))  # as kopf: no proxy from the env
        self._info = info
        self._opener = urllib.request.build_opener(*handlers)
        self._headers = {**info.as_http_headers(), "Accept": "application/json",
                         "User-Agent": "respool-dashboard"}
        self.server = info.server.rstrip("/")

    @property
    def default_namespace(self) -> str:
        return self._info.default_namespace or "default"

    def close(self) -> None:
        """Nothing held open between requests."""

    # -- one request ------------------------------------------------------------------------

    def _log_in_again(self, rejected: kopf.ConnectionInfo) -> bool:
        """After a 401 with `rejected`: fresh credentials, if they differ (else no retry)."""
        with self._lock:
            if rejected is not self._info:
                return True  # another thread has already logged in again
            if self._relogin is None:
                return False
            try:
                info = self._relogin()
            except Exception as exc:  # kopf.LoginError, unreadable files: keep the old ones
                logger.warning("logging in again after a 401 failed: %s", exc)
                return False
            if info == self._info:
                return False
            self._use(info)
            return True

    def _open(
        self, path: str, params: dict[str, str], timeout: float, *,
        namespace: str | None = None, pool: str | None = None,
    ) -> http.client.HTTPResponse:
        """The response to a GET (status < 400); raises the client's error otherwise."""
        for attempt in (1, 2):
            with self._lock:
                info, opener, headers = self._info, self._opener, dict(self._headers)
                url = self.server + path + ("?" + urlencode(params) if params else "")
            request = urllib.request.Request(url, headers=headers, method="GET")
            try:
                response: http.client.HTTPResponse = opener.open(request, timeout=timeout)
                return response
            except urllib.error.HTTPError as exc:
                with exc:
                    text = exc.read().decode("utf-8", "replace")
                if exc.code == 401 and attempt == 1 and self._log_in_again(info):
                    continue
                if exc.code == 410:
                    raise ResourceVersionExpired(f"{path} at {params.get('resourceVersion')}") from exc
                message, details = _status(text, exc)
                raise translate(exc.code, message, details, server=self.server,
                                namespace=namespace, pool=pool) from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise ClusterUnreachable(
                    f"cannot reach the Kubernetes API server at {self.server}: {reason}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _get(self, path: str, params: dict[str, str] | None = None, *,
             namespace: str | None = None, pool: str | None = None) -> Object:
        response = self._open(path, params or {}, self.request_timeout,
                              namespace=namespace, pool=pool)
        with response:
            try:
                body = json.loads(response.read())
            except (ValueError, OSError, http.client.HTTPException) as exc:
                raise ClusterUnreachable(
                    f"unreadable answer from the API server at {self.server}: {exc}") from exc
        if not isinstance(body, dict):
            raise RespoolError(f"unexpected reply from the API server: {body!r:.200}")
        return body

    # -- the DataSource ---------------------------------------------------------------------

    def get_pool(self, name: str) -> Object:
        return self._get(f"/apis/{GROUP}/{VERSION}/resourcepools/{quote(name, safe='')}",
                         pool=name)

    def get_reservation(self, namespace: str, name: str) -> Object:
        return self._get(
            f"{_collection('resourcereservations', namespace)}/{quote(name, safe='')}",
            namespace=namespace)

    def list_pages(
        self, plural: str, namespace: str | None = None, *, page_size: int = 500
    ) -> Iterator[tuple[list[Object], str]]:
        token = ""
        while True:
            params = {"limit": str(page_size)}
            if token:
                params["continue"] = token
            reply = self._get(_collection(plural, namespace), params, namespace=namespace)
            metadata = reply.get("metadata") or {}
            yield [dict(item) for item in reply.get("items") or []], \
                str(metadata.get("resourceVersion") or "")
            token = str(metadata.get("continue") or "")
            if not token:
                return

    def watch(
        self, plural: str, namespace: str | None, resource_version: str, *, timeout: int = 240
    ) -> Iterator[tuple[str, Object]]:
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout)}
        # A connection that goes silent (a vanished server) is noticed, not waited on.
        response = self._open(_collection(plural, namespace), params, timeout + 30,
                              namespace=namespace)
        with response:
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise ClusterUnreachable(
                        f"the watch of {plural} on {self.server} broke: {exc}") from exc
                if not line:
                    return  # the server ended the watch (its timeout): the caller goes on
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except RecursionError:
                    logger.error("watch of %s: an object nested too deep to read was skipped", plural)
                    continue
                except ValueError as exc:
                    raise RespoolError(f"watch of {plural}: unreadable event: {exc}") from exc
                change = watch_change(plural, resource_version, event)
                if change is not None:
                    yield change

    def list_events(self, namespace: str, kind: str, name: str) -> list[Object]:
        reply = self._get(
            f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
            {"fieldSelector": f"involvedObject.kind={kind},involvedObject.name={name}"},
            namespace=namespace)
        events = [dict(item) for item in reply.get("items") or []]
        return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def _collection(plural: str, namespace: str | None) -> str:
    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{plural}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{plural}"


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | None:
    if not info.server.startswith("https:"):
        return None
    return info.as_ssl_context()


def _status(text: str, exc: urllib.error.HTTPError) -> tuple[str, dict[str, Any]]:
    """The API server's message and details from an error answer's Status object."""
    try:
        body = json.loads(text)
    except ValueError:
        return (text.strip() or str(exc.reason or exc.code))[:500], {}
    if not isinstance(body, dict):
        return str(body)[:500], {}
    return str(body.get("message") or exc.reason or exc.code), dict(body.get("details") or {})

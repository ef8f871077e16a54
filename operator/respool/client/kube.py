"""Kubernetes access for the respool client and CLI: configuration, CRUD, bounded waits, and
errors a person can act on.

Everything here goes through the official ``kubernetes`` client (no global configuration is
touched), and every call carries a timeout, so no function in the client can hang.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Self

from respool import GROUP, VERSION
from respool.api.conditions import condition as condition
from respool.api.conditions import reason_of as reason_of
from respool.client.errors import (
    AccessDenied,
    AlreadyExists,
    ClusterUnreachable,
    InvalidConfigRequest,
    ReservationNotFound,
    ResourceVersionExpired,
    RespoolError,
    ServerError,
)
from respool.client.liveness import with_owner
from respool.errors import POOLS, RESERVATIONS, translate, watch_change
from respool.extras import ClientExtraMissing, is_client_extra_missing

# The client's dependencies come with `pip install 'respool[client]'`; the operator's image
# does without them. Without them, say so instead of a bare "No module named 'kubernetes'".
try:
    import urllib3
    from kubernetes import client as k8s
    from kubernetes import config as _k8s_config
    from kubernetes import watch as _k8s_watch
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
except ModuleNotFoundError as missing:
    if not is_client_extra_missing(missing):
        raise
    raise ClientExtraMissing(missing.name) from missing

KIND_RESERVATION = "ResourceReservation"
FIELD_MANAGER = "respool-client"
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
REQUEST_ID = "respool.io/request-id"
"""Annotation with the idempotency key of the create that made a reservation."""
CREATE_ATTEMPTS = 3

Object = dict[str, Any]

# These modules of the kubernetes package carry no type hints.
k8s_config: Any = _k8s_config
k8s_watch: Any = _k8s_watch


@dataclass(frozen=True)
class Connection:
    """A configured API client and the namespace its kubeconfig context selects."""

    api_client: k8s.ApiClient
    default_namespace: str
    server: str


def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """Build an API client from `kubeconfig`, else ``$KUBECONFIG``, else ``~/.kube/config``,
    else the in-cluster service account. Raises `ClusterUnreachable` when none is usable."""
    configuration = k8s.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if path is None and os.path.exists(os.path.expanduser("~/.kube/config")):
        path = os.path.expanduser("~/.kube/config")
    namespace = "default"
    try:
        if path is not None:
            if not any(
                os.path.exists(os.path.expanduser(single)) for single in path.split(os.pathsep) if single
            ):
                raise ClusterUnreachable(f"kubeconfig {path!r} does not exist")
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration,
                persist_config=False,
            )
            contexts, active = k8s_config.list_kube_config_contexts(config_file=path)
            chosen = active
            if context is not None:
                chosen = next((c for c in contexts if c.get("name") == context), active)
            namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
            with open(IN_CLUSTER_NAMESPACE_FILE, encoding="utf-8") as handle:
                namespace = handle.read().strip() or "default"
        else:
            raise ClusterUnreachable(
                "no Kubernetes configuration: set KUBECONFIG, pass --kubeconfig, or create "
                "~/.kube/config (for a local cluster: `respool dev up` and "
                "`export KUBECONFIG=$(respool dev kubeconfig)`)"
            )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise ClusterUnreachable(f"cannot load the Kubernetes configuration {path or ''}: {exc}") from exc
    # Fail fast on a dead endpoint instead of urllib3's default retry ladder.
    configuration.retries = 1
    return Connection(k8s.ApiClient(configuration), namespace, configuration.host)


def _status_message(exc: ApiException) -> tuple[str, dict[str, Any]]:
    """The API server's own message and details from an error response."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return (str(exc.body or exc.reason or exc.status)).strip(), {}
    if not isinstance(body, dict):
        return str(body), {}
    return str(body.get("message") or exc.reason or exc.status), dict(body.get("details") or {})


class KubeAPI:
    """Thin, typed access to respool's custom objects with translated errors.

    `request_timeout` bounds every single HTTP call (seconds).
    """

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        request_timeout: float = 30.0,
        connection: Connection | None = None,
        owner_reference: bool = True,
    ) -> None:
        self.connection = connection or connect(kubeconfig, context)
        self.request_timeout = request_timeout
        self.custom = k8s.CustomObjectsApi(self.connection.api_client)
        #: Holder liveness (respool.client.liveness): a reservation created from inside a Pod
        #: is owned by that Pod or its Job. False (or RESPOOL_OWNER_REFERENCE=none): never.
        self.owner_reference = owner_reference

    @property
    def default_namespace(self) -> str:
        return self.connection.default_namespace

    def close(self) -> None:
        api_client: Any = self.connection.api_client
        api_client.close()

    # -- errors -----------------------------------------------------------------------------

    @contextmanager
    def errors(self, *, namespace: str | None = None, pool: str | None = None) -> Iterator[None]:
        """Turn transport and API errors into the client's exceptions."""
        try:
            yield
        except ApiException as exc:
            raise self._translate(exc, namespace=namespace, pool=pool) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachable(
                f"cannot reach the Kubernetes API server at {self.connection.server}: "
                f"{_short_reason(exc)}"
            ) from exc

    def _translate(
        self, exc: ApiException, *, namespace: str | None, pool: str | None
    ) -> RespoolError:
        message, details = _status_message(exc)
        return translate(exc.status or 0, message, details, server=self.connection.server,
                         namespace=namespace, pool=pool)

    # -- pools ------------------------------------------------------------------------------

    def get_pool(self, name: str) -> Object:
        with self.errors(pool=name):
            return _object(
                self.custom.get_cluster_custom_object(
                    GROUP, VERSION, POOLS, name, _request_timeout=self.request_timeout
                )
            )

    def check_pool(self, name: str) -> None:
        """Raise `PoolNotFound` early if the pool is missing. A client that may not read
        cluster-scoped pools skips this and gets the operator's verdict instead."""
        with suppress(AccessDenied):
            self.get_pool(name)

    def list_pools(self) -> list[Object]:
        with self.errors():
            reply = self.custom.list_cluster_custom_object(
                GROUP, VERSION, POOLS, _request_timeout=self.request_timeout
            )
        return _items(reply)

    # -- reservations -----------------------------------------------------------------------

    def list_reservations(self, namespace: str | None) -> list[Object]:
        """Reservations in `namespace`, or in every namespace when it is None."""
        with self.errors(namespace=namespace):
            if namespace is None:
                reply = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, RESERVATIONS, _request_timeout=self.request_timeout
                )
            else:
                reply = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESERVATIONS, _request_timeout=self.request_timeout
                )
        return _items(reply)

    def get_reservation(self, namespace: str, name: str) -> Object:
        with self.errors(namespace=namespace):
            return _object(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESERVATIONS, name,
                    _request_timeout=self.request_timeout,
                )
            )

    def create_reservation(self, namespace: str, body: Mapping[str, Any], *, pool: str | None = None) -> Object:
        """Create, at most once, even when an answer is lost.

        The object gets its name here (``generateName`` is resolved by the client, not the
        server) and an idempotency key (annotation ``respool.io/request-id``). When the
        answer to a create is lost - a time-out, a dropped connection, a 5xx - the request
        may or may not have been carried out: the object is looked up by its name and, if
        it carries this key, it is the one created; else the create is sent again. So a
        retried create never leaves an orphan that nobody can name."""
        body = dict(body)
        if self.owner_reference:
            body = with_owner(body, namespace, self._read_pod)
        metadata = dict(body.get("metadata") or {})
        prefix = metadata.pop("generateName", None)
        if not metadata.get("name"):
            metadata["name"] = f"{prefix or 'rsv-'}{secrets.token_hex(5)}"
        annotations = dict(metadata.get("annotations") or {})
        key = annotations.setdefault(REQUEST_ID, secrets.token_hex(16))
        metadata["annotations"] = annotations
        body["metadata"] = metadata
        name = str(metadata["name"])
        lost: RespoolError | None = None
        for _attempt in range(CREATE_ATTEMPTS):
            try:
                with self.errors(namespace=namespace, pool=pool):
                    return _object(
                        self.custom.create_namespaced_custom_object(
                            GROUP, VERSION, namespace, RESERVATIONS, body,
                            field_manager=FIELD_MANAGER, _request_timeout=self.request_timeout,
                        )
                    )
            except AlreadyExists:
                mine = self._created_with(namespace, name, key)
                if mine is not None:
                    return mine  # an earlier attempt landed; its answer was lost
                raise AlreadyExists(
                    f"ResourceReservation {namespace}/{name} already exists") from None
            except (ClusterUnreachable, ServerError) as exc:
                lost = exc
                try:
                    mine = self._created_with(namespace, name, key)
                except (ClusterUnreachable, ServerError):
                    mine = None
                if mine is not None:
                    return mine
        assert lost is not None
        raise lost

    def _read_pod(self, namespace: str, name: str) -> Object:
        api_client: Any = self.connection.api_client
        pod = k8s.CoreV1Api(api_client).read_namespaced_pod(
            name, namespace, _request_timeout=self.request_timeout)
        return _object(api_client.sanitize_for_serialization(pod))

    def _created_with(self, namespace: str, name: str, key: str) -> Object | None:
        """The reservation `name` if it exists and was created with idempotency key `key`."""
        try:
            found = self.get_reservation(namespace, name)
        except ReservationNotFound:
            return None
        annotations = (found.get("metadata") or {}).get("annotations") or {}
        return found if annotations.get(REQUEST_ID) == key else None

    def patch_reservation(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Object:
        with self.errors(namespace=namespace):
            return _object(
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESERVATIONS, name, dict(patch),
                    field_manager=FIELD_MANAGER, _request_timeout=self.request_timeout,
                    _content_type="application/merge-patch+json",
                )
            )

    def delete_reservation(self, namespace: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            with self.errors(namespace=namespace):
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESERVATIONS, name,
                    _request_timeout=self.request_timeout,
                )
        except ReservationNotFound:
            return False
        return True

    def find_reservation(self, namespace: str, name_or_id: str) -> Object | None:
        """The reservation named `name_or_id`, or holding it as pre-reservation/reservation ID.

        One already being deleted (released, waiting for the operator's finalizer) counts as
        gone.
        """
        try:
            found = self.get_reservation(namespace, name_or_id)
        except ReservationNotFound:
            found = None
        if found is None:
            for item in self.list_reservations(namespace):
                status = item.get("status") or {}
                if name_or_id in (status.get("preReservationId"), status.get("reservationId")):
                    found = item
                    break
        if found is None or (found.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return found

    def wait_reservation(
        self,
        namespace: str,
        name: str,
        done: Callable[[Object], bool],
        timeout: float,
        on_change: Callable[[Object], None] | None = None,
    ) -> Object | None:
        """Watch one reservation until ``done(obj)``; the object, or None at `timeout`.

        Raises `ReservationNotFound` if it is deleted meanwhile. `on_change` sees every new
        version (for progress output).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        current = self.get_reservation(namespace, name)
        if on_change is not None:
            on_change(current)
        while True:
            if done(current):
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            version = current["metadata"]["resourceVersion"]
            watcher = k8s_watch.Watch()
            try:
                with self.errors(namespace=namespace):
                    try:
                        for event in watcher.stream(
                            self.custom.list_namespaced_custom_object,
                            GROUP, VERSION, namespace, RESERVATIONS,
                            field_selector=f"metadata.name={name}",
                            resource_version=version,
                            timeout_seconds=max(1, math.ceil(remaining)),
                            _request_timeout=remaining + 5.0,
                        ):
                            kind = event.get("type")
                            obj = event.get("object")
                            if kind == "DELETED":
                                raise ReservationNotFound(
                                    f"ResourceReservation {namespace}/{name} was deleted"
                                )
                            if kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                                current = obj
                                if on_change is not None:
                                    on_change(current)
                                if done(current):
                                    return current
                            if time.monotonic() >= deadline:
                                break
                    except ApiException as exc:
                        if exc.status != 410:  # 410: our version expired; re-read below
                            raise
            finally:
                watcher.stop()
            # The watch ended (server timeout, expired version): re-read and go on.
            current = self.get_reservation(namespace, name)
            if on_change is not None:
                on_change(current)


    # -- listing in pages, watching, Events (for long-running readers: the dashboard) -------

    def list_pages(
        self, plural: str, namespace: str | None = None, *, page_size: int = 500
    ) -> Iterator[tuple[list[Object], str]]:
        """List `plural` (cluster-wide, or in `namespace`) in pages of `page_size`, so that a
        reader of ten thousand objects never holds the whole answer at once. Yields each
        page's items and the list's resourceVersion (to watch from after the last page)."""
        token: str | None = None
        while True:
            with self.errors(namespace=namespace):
                options: dict[str, Any] = {"limit": page_size, "_request_timeout": self.request_timeout}
                if token:
                    options["_continue"] = token
                if namespace is None:
                    reply = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **options)
                else:
                    reply = self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, **options
                    )
            metadata = (reply.get("metadata") if isinstance(reply, dict) else None) or {}
            yield _items(reply), str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if not token:
                return

    def watch(
        self, plural: str, namespace: str | None, resource_version: str, *, timeout: int = 240
    ) -> Iterator[tuple[str, Object]]:
        """Changes to `plural` after `resource_version`, as (type, object), for at most
        `timeout` seconds (the caller watches again from the last version it saw). An expired
        version raises `ResourceVersionExpired`: list again."""
        watcher = k8s_watch.Watch()
        options: dict[str, Any] = {
            "resource_version": resource_version,
            "timeout_seconds": timeout,
            "allow_watch_bookmarks": True,
            # A connection that goes silent (a vanished server) is noticed, not waited on.
            "_request_timeout": timeout + 30,
        }
        try:
            with self.errors(namespace=namespace):
                try:
                    if namespace is None:
                        stream = watcher.stream(
                            self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **options
                        )
                    else:
                        stream = watcher.stream(
                            self.custom.list_namespaced_custom_object,
                            GROUP, VERSION, namespace, plural, **options,
                        )
                    for event in stream:
                        change = watch_change(plural, resource_version, event)
                        if change is not None:
                            yield change
                except ApiException as exc:
                    if exc.status == 410:
                        raise ResourceVersionExpired(f"{plural} at {resource_version}") from exc
                    raise
        finally:
            watcher.stop()

    def list_events(self, namespace: str, kind: str, name: str) -> list[Object]:
        """The Events about one object (`kind` e.g. ``ResourceReservation``), oldest first."""
        core = k8s.CoreV1Api(self.connection.api_client)
        with self.errors(namespace=namespace):
            reply = core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                _request_timeout=self.request_timeout,
            )
        api_client: Any = self.connection.api_client  # untyped
        events = [api_client.sanitize_for_serialization(item) for item in reply.items]
        return sorted(
            events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")
        )


class ClientBase:
    """Shared by the clients built on one `KubeAPI`: the connection, the namespace, how long
    to wait for the operator, closing, and use in a ``with`` block.

    ``namespace=None`` means the kubeconfig context's namespace (else ``default``)."""

    def __init__(
        self,
        namespace: str | None,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        request_timeout: float = 30.0,
        operator_timeout: float = 30.0,
        api: KubeAPI | None = None,
    ) -> None:
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise InvalidConfigRequest(f"namespace must be a non-empty string, got {namespace!r}")
        if not operator_timeout > 0:
            raise InvalidConfigRequest(f"operator_timeout must be > 0 seconds, got {operator_timeout!r}")
        self.api = api or KubeAPI(kubeconfig, context, request_timeout=request_timeout)
        self.namespace: str = namespace or self.api.default_namespace
        self.operator_timeout = float(operator_timeout)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _object(reply: object) -> Object:
    if not isinstance(reply, dict):
        raise RespoolError(f"unexpected reply from the API server: {reply!r:.200}")
    return reply


def _items(reply: object) -> list[Object]:
    if not isinstance(reply, dict):
        return []
    return [dict(item) for item in reply.get("items") or []]


def _short_reason(exc: BaseException) -> str:
    reason: object = getattr(exc, "reason", None)
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = getattr(reason, "reason", None)
    text = str(reason or exc)
    if "Connection refused" in text:
        return "connection refused (is the API server running?)"
    return text


def evaluated(obj: Mapping[str, Any]) -> bool:
    """The operator has looked at this version of the reservation (architecture.md)."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return bool(status.get("phase")) and status.get("observedGeneration") == generation

"""What the dashboard reads the cluster through: a small seam with two implementations.

- `respool dashboard`, run by a user: the client's `respool.client.kube.KubeAPI` (the official
  Kubernetes client, their kubeconfig, their permissions);
- `respool run --dashboard-port`, served by the operator: `respool.dashboard.rest.RestSource`
  (the standard library's HTTP client with the operator's own credentials), because the
  operator's image does without the Kubernetes client (the ``client`` extra).

Either one reads as the identity it runs as, and raises the errors of `respool.errors`
(`AccessDenied`, `NamespaceForbidden`, `ResourceVersionExpired`, ...), which the dashboard acts on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

Object = dict[str, Any]

KIND_RESERVATION = "ResourceReservation"


class DataSource(Protocol):
    """The reads the dashboard makes. Blocking calls: the dashboard makes them from threads."""

    @property
    def default_namespace(self) -> str:
        """The namespace to fall back to when every namespace may not be listed."""
        ...

    def list_pages(
        self, plural: str, namespace: str | None = None, *, page_size: int = 500
    ) -> Iterator[tuple[list[Object], str]]:
        """Each page of a listing of `plural` (cluster-wide when `namespace` is None) and the
        listing's resourceVersion."""
        ...

    def watch(
        self, plural: str, namespace: str | None, resource_version: str, *, timeout: int = 240
    ) -> Iterator[tuple[str, Object]]:
        """(type, object) for every change after `resource_version`, for at most `timeout`
        seconds; `ResourceVersionExpired` when that version is too old."""
        ...

    def get_reservation(self, namespace: str, name: str) -> Object: ...

    def get_pool(self, name: str) -> Object: ...

    def list_events(self, namespace: str, kind: str, name: str) -> list[Object]:
        """The Events about one object, oldest first."""
        ...

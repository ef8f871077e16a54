"""respool.client: reserve respool hardware from Python.

Two APIs over the same Kubernetes objects:

- the KISS ATS one, for code ported from kissats: `ResourceReservation` (the handle) over
  `KubernetesATSClient` (the server);
- a native one: ``with reserve("rack-a", nodes=2, duration="1h", timeout=600) as r: r.nodes``.
"""

from respool.client.ats import ATSClient, ResourceReservation
from respool.client.errors import (
    AccessDenied,
    AlreadyExists,
    ClusterUnreachable,
    InvalidConfigRequest,
    MaxWaitExceeded,
    NamespaceForbidden,
    NotInstalled,
    OperatorNotResponding,
    PoolNotFound,
    ReservationFailed,
    ReservationNotFound,
    ReservationTimeout,
    ResourceRetryExceeded,
    ResourceUnavailable,
    RespoolError,
    ServerError,
)
from respool.client.kubernetes_ats import KubernetesATSClient
from respool.client.native import RespoolClient, reserve
from respool.client.objects import Reservation

__all__ = [
    "ATSClient",
    "AccessDenied",
    "AlreadyExists",
    "ClusterUnreachable",
    "InvalidConfigRequest",
    "KubernetesATSClient",
    "MaxWaitExceeded",
    "NamespaceForbidden",
    "NotInstalled",
    "OperatorNotResponding",
    "PoolNotFound",
    "Reservation",
    "ReservationFailed",
    "ReservationNotFound",
    "ReservationTimeout",
    "ResourceReservation",
    "ResourceRetryExceeded",
    "ResourceUnavailable",
    "RespoolClient",
    "RespoolError",
    "ServerError",
    "reserve",
]

"""respool.client: reserve respool hardware from Python.

Two APIs over the same Kubernetes objects:

- the KISS ATS one, for code ported from kissats: `ResourceReservation` (the handle) over
  `KubernetesATSClient` (the server);
- a native one: ``with reserve("rack-a", nodes=2, duration="1h", timeout=600) as r: r.nodes``.
"""

from respool.client.ats import ATSClient, ResourceReservation
from respool.client.errors import (
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
)

__all__ = [
    "ATSClient",
    "ClusterUnreachable",
    "InvalidConfigRequest",
    "MaxWaitExceeded",
    "NamespaceForbidden",
    "NotInstalled",
    "OperatorNotResponding",
    "PoolNotFound",
    "ReservationFailed",
    "ReservationNotFound",
    "ReservationTimeout",
    "ResourceReservation",
    "ResourceRetryExceeded",
    "ResourceUnavailable",
    "RespoolError",
]

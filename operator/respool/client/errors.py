"""Exceptions of the respool client: defined in `respool.errors` (which the operator can import
without the client's dependencies), re-exported here where the client's users find them."""

from respool.errors import (
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
    ResourceVersionExpired,
    RespoolError,
    ServerError,
)

__all__ = [
    "AccessDenied",
    "AlreadyExists",
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
    "ResourceRetryExceeded",
    "ResourceUnavailable",
    "ResourceVersionExpired",
    "RespoolError",
    "ServerError",
]

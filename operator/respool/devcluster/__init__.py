"""A real local Kubernetes control plane, built from Go modules (standard library only).

- :func:`ensure_binaries` builds or finds kube-apiserver, kubectl, etcd and helm in the cache
  (etcd from Debian's etcd-server package when building it fails: ``RESPOOL_ETCD_SOURCE``).
- :class:`ControlPlane` runs etcd + kube-apiserver with files in a directory of your choice
  (the pytest session fixture starts a private one per test session).
- :mod:`respool.devcluster.shared` is the user's one control plane behind ``respool dev``.
"""

from respool.devcluster.build import (
    BINARIES,
    cached_bin_dir,
    ensure_binaries,
    etcd_origin,
    etcd_source,
    find_go,
)
from respool.devcluster.controlplane import ControlPlane, PlaneState, free_port
from respool.devcluster.errors import (
    BuildError,
    DebianEtcdError,
    DevClusterError,
    EtcdSourceError,
    GoMissingError,
    PortInUseError,
    ProxyUnreachableError,
    StartError,
)
from respool.devcluster.versions import DEFAULT_VERSIONS, ETCD_SOURCE_ENV, Versions, cache_home

__all__ = [
    "BINARIES",
    "DEFAULT_VERSIONS",
    "ETCD_SOURCE_ENV",
    "BuildError",
    "ControlPlane",
    "DebianEtcdError",
    "DevClusterError",
    "EtcdSourceError",
    "GoMissingError",
    "PlaneState",
    "PortInUseError",
    "ProxyUnreachableError",
    "StartError",
    "Versions",
    "cache_home",
    "cached_bin_dir",
    "ensure_binaries",
    "etcd_origin",
    "etcd_source",
    "find_go",
    "free_port",
]

"""Errors of the dev cluster: each one carries a message a person can act on."""

from __future__ import annotations


class DevClusterError(RuntimeError):
    """Base class: something about the local control plane or its binaries went wrong.

    The message is written for the person at the terminal: what happened and what to do.
    """


class GoMissingError(DevClusterError):
    """The Go toolchain needed to build the binaries is absent or too old."""


class ProxyUnreachableError(DevClusterError):
    """The Go module proxy could not be reached while downloading modules."""


class BuildError(DevClusterError):
    """`go build` (or a check of its output) failed."""


class PortInUseError(DevClusterError):
    """A port the control plane needs is already taken by another process."""


class StartError(DevClusterError):
    """etcd or kube-apiserver did not start or did not become ready in time."""


class DebianEtcdError(BuildError):
    """Debian's etcd-server (the fallback etcd) could not be found, fetched or run."""


class EtcdSourceError(DevClusterError):
    """``RESPOOL_ETCD_SOURCE`` holds a value other than go, debian or auto."""

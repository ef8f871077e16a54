"""The versions of the binaries the dev cluster builds, and where they are cached."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: Kubernetes release whose kube-apiserver, kubectl, kube-scheduler and
#: kube-controller-manager are built (its go.mod says go 1.26).
KUBERNETES_VERSION = "v1.36.3"
#: etcd server release (3.6 is what upstream tests Kubernetes 1.34+ against).
ETCD_VERSION = "v3.6.16"
#: Helm 3 release (v3.21 needs go 1.26).
HELM_VERSION = "v3.21.4"
#: kwok release (simulated Nodes and kubelets; its go.mod says go 1.26 and client-go v0.36).
KWOK_VERSION = "v0.8.0"


@dataclass(frozen=True)
class Versions:
    """One set of binary versions; together with the Go version and CPU it names a cache entry."""

    kubernetes: str = KUBERNETES_VERSION
    etcd: str = ETCD_VERSION
    helm: str = HELM_VERSION
    kwok: str = KWOK_VERSION

    def cache_key(self, go_version: str, goarch: str) -> str:
        """Directory name of the cached binaries, e.g.
        ``k8s-v1.36.3_etcd-v3.6.16_helm-v3.21.4_kwok-v0.8.0_go1.26.8_amd64``."""
        return f"{self.key_prefix()}_{go_version}_{goarch}"

    def key_prefix(self) -> str:
        return f"k8s-{self.kubernetes}_etcd-{self.etcd}_helm-{self.helm}_kwok-{self.kwok}"

    def debian_etcd_cache_key(self, go_version: str, goarch: str) -> str:
        """Directory name of a set whose etcd is Debian's etcd-server (the fallback), e.g.
        ``k8s-v1.36.3_etcd-debian_helm-v3.21.4_kwok-v0.8.0_go1.26.8_amd64``; the package version it holds
        is recorded in its ``build-info.json``, not in the name, so that the entry is found
        again without asking apt."""
        return f"{self.debian_etcd_key_prefix()}_{go_version}_{goarch}"

    def debian_etcd_key_prefix(self) -> str:
        return f"k8s-{self.kubernetes}_etcd-debian_helm-{self.helm}_kwok-{self.kwok}"

    @property
    def kubernetes_minor(self) -> int:
        return int(self.kubernetes.lstrip("v").split(".")[1])

    @property
    def staging_version(self) -> str:
        """The tag of k8s.io/<staging module> that belongs to this Kubernetes release:
        Kubernetes v1.Y.Z ships its staging repositories as v0.Y.Z."""
        _major, minor, patch = self.kubernetes.lstrip("v").split(".", 2)
        return f"v0.{minor}.{patch}"


DEFAULT_VERSIONS = Versions()

#: Where etcd comes from: ``go`` (built from go.etcd.io/etcd/server/v3 only), ``debian``
#: (Debian's etcd-server package only), ``auto`` (Go modules, Debian's package when that fails).
ETCD_SOURCE_ENV = "RESPOOL_ETCD_SOURCE"
ETCD_SOURCES = ("auto", "go", "debian")


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/respool`` (default ``~/.cache/respool``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "respool"


def host_goarch() -> str:
    """The GOARCH naming this machine's CPU (used when Go itself is not installed)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )

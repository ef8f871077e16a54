"""Debian's ``etcd-server`` package as a fallback etcd, fetched without installing anything.

When etcd cannot be built from Go modules (or ``RESPOOL_ETCD_SOURCE=debian`` asks for it), the
package is downloaded with ``apt-get download`` into a private directory, unpacked with
``dpkg-deb -x`` and only its ``usr/bin/etcd`` is kept. Nothing is installed system-wide, no
service is started and no root is needed:

- apt's own package lists are used when they know the package (the usual case on a Debian or
  Ubuntu machine, and on CI runners);
- when they do not (container images ship with empty lists, and ``apt-get update`` on the
  system lists needs root), respool refreshes a private copy of the lists under
  ``~/.cache/respool/apt/`` with the machine's configured sources and asks those instead.

Measured (``docs/devcluster.md``): Debian 12's etcd-server 3.4.23 runs a kube-apiserver v1.36
control plane that passes the smoke tests and the whole e2e suite; kube-apiserver logs that
etcd 3.4 lacks ``RequestWatchProgress`` and serves consistent LISTs from etcd instead of its
watch cache. etcd older than 3.4 is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from respool.devcluster.errors import DebianEtcdError
from respool.devcluster.versions import cache_home

PACKAGE = "etcd-server"
#: kube-apiserver v1.36 was measured to work against etcd 3.4.23; 3.3 lacks the v3 API features
#: it needs (and Kubernetes stopped testing it long ago), so older packages are refused.
MINIMUM_ETCD = (3, 4)
_APT_TIMEOUT_SECONDS = 300.0
_CANDIDATE = re.compile(r"^\s*Candidate:\s*(\S+)\s*$", re.M)
_ETCD_VERSION = re.compile(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class DebianEtcd:
    """An etcd binary taken out of Debian's package, with where it came from."""

    binary: Path
    package_version: str  # e.g. "3.4.23-4+b4"
    etcd_version: str  # what ``etcd --version`` reports, e.g. "3.4.23"
    package_lists: str  # "system" or the private lists directory that knew the package
    reported: str  # first line of ``etcd --version``


def upstream_version(package_version: str) -> str:
    """The upstream part of a Debian version: ``1:3.4.23-4+b4`` -> ``3.4.23``."""
    without_epoch = package_version.split(":", 1)[-1]
    upstream, _separator, _revision = without_epoch.rpartition("-")
    return upstream or without_epoch


def candidate_version(policy_output: str) -> str | None:
    """The ``Candidate:`` of ``apt-cache policy`` output, or None when apt has none."""
    match = _CANDIDATE.search(policy_output)
    if not match or match[1] == "(none)":
        return None
    return match[1]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)[:3]
    return tuple(int(part) for part in parts)


class DebianEtcdFetcher:
    """Finds, downloads, unpacks and checks Debian's etcd-server, each step with a clear error."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.private_apt = cache_home() / "apt"

    # -- apt --------------------------------------------------------------------------------

    def _private_options(self) -> list[str]:
        return [
            "-o",
            f"Dir::State::Lists={self.private_apt / 'lists'}",
            "-o",
            f"Dir::Cache={self.private_apt / 'cache'}",
        ]

    def _run(self, command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        executable = shutil.which(command[0])
        if executable is None:
            raise DebianEtcdError(
                f"`{command[0]}` is not on PATH, so Debian's {PACKAGE} cannot be fetched: the "
                "fallback needs apt and dpkg (Debian or Ubuntu). Install Go >= 1.26 and make the "
                "Go module proxy reachable so etcd can be built instead."
            )
        try:
            return subprocess.run(
                [executable, *command[1:]],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=_APT_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                check=False,
                # apt's messages are parsed (Candidate:), so keep them in English.
                env={**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"},
            )
        except subprocess.TimeoutExpired as error:
            raise DebianEtcdError(
                f"`{' '.join(command)}` did not finish within {_APT_TIMEOUT_SECONDS:.0f}s; check that "
                "the Debian mirror in /etc/apt/sources.list(.d) is reachable."
            ) from error
        except OSError as error:
            raise DebianEtcdError(f"could not run `{' '.join(command)}`: {error}") from error

    def _policy(self, options: list[str]) -> tuple[str | None, str]:
        completed = self._run(["apt-cache", *options, "policy", PACKAGE])
        output = (completed.stdout + completed.stderr).strip()
        if completed.returncode != 0:
            return None, output
        return candidate_version(completed.stdout), output

    def _refresh_private_lists(self) -> str:
        (self.private_apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.private_apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.progress(
            f"apt's package lists do not know {PACKAGE}; refreshing a private copy in "
            f"{self.private_apt} (no root needed, about 25 MB)"
        )
        completed = self._run(["apt-get", "-q", *self._private_options(), "update"])
        return (completed.stdout + completed.stderr).strip()

    def find_package(self) -> tuple[str, list[str], str]:
        """(version, apt options, which lists) of the etcd-server apt would download."""
        version, system_output = self._policy([])
        if version is not None:
            return version, [], "system"
        private = self._private_options()
        version, _output = self._policy(private) if (self.private_apt / "lists").is_dir() else (None, "")
        if version is None:
            update_output = self._refresh_private_lists()
            version, private_output = self._policy(private)
            if version is None:
                raise DebianEtcdError(
                    f"apt knows no {PACKAGE} package, neither in the system's package lists nor in "
                    f"freshly refreshed private ones ({self.private_apt}). Check the Debian sources in "
                    "/etc/apt/sources.list(.d) and that the mirror is reachable.\n"
                    f"apt-cache policy said: {system_output or '(nothing)'}\n"
                    f"apt-get update said (last lines): {_last_lines(update_output)}\n"
                    f"private apt-cache policy said: {private_output or '(nothing)'}"
                )
        return version, private, str(self.private_apt / "lists")

    # -- fetch ------------------------------------------------------------------------------

    def fetch(self, work: Path, package: tuple[str, list[str], str] | None = None) -> DebianEtcd:
        """Download and unpack etcd-server under ``work``; return its checked etcd binary.

        ``package`` is what :meth:`find_package` returned, when the caller asked already.
        """
        version, options, lists = package or self.find_package()
        upstream = upstream_version(version)
        if _version_tuple(upstream)[:2] < MINIMUM_ETCD:
            raise DebianEtcdError(
                f"Debian's {PACKAGE} here is {version} (etcd {upstream}), older than etcd "
                f"{MINIMUM_ETCD[0]}.{MINIMUM_ETCD[1]}, which kube-apiserver needs; respool cannot "
                "use it. Build etcd from Go modules instead (Go >= 1.26, a reachable GOPROXY)."
            )
        download = work / "download"
        download.mkdir(parents=True, exist_ok=True)
        self.progress(f"downloading Debian's {PACKAGE} {version} (apt-get download, nothing is installed)")
        completed = self._run(["apt-get", "-q", *options, "download", f"{PACKAGE}={version}"], cwd=download)
        packages = sorted(download.glob(f"{PACKAGE}_*.deb"))
        if completed.returncode != 0 or not packages:
            raise DebianEtcdError(
                f"`apt-get download {PACKAGE}={version}` failed (exit {completed.returncode}); check "
                "that the Debian mirror is reachable.\napt said (last lines): "
                + _last_lines(completed.stdout + completed.stderr)
            )
        unpacked = work / "unpacked"
        completed = self._run(["dpkg-deb", "-x", str(packages[0]), str(unpacked)])
        binary = unpacked / "usr" / "bin" / "etcd"
        if completed.returncode != 0 or not os.access(binary, os.X_OK):
            raise DebianEtcdError(
                f"could not unpack usr/bin/etcd from {packages[0].name} with dpkg-deb "
                f"(exit {completed.returncode}): {_last_lines(completed.stdout + completed.stderr)}"
            )
        reported, etcd_version = self._check(binary, upstream)
        return DebianEtcd(
            binary=binary,
            package_version=version,
            etcd_version=etcd_version,
            package_lists=lists,
            reported=reported,
        )

    def _check(self, binary: Path, upstream: str) -> tuple[str, str]:
        """Run ``etcd --version``; it must run here and name the package's upstream version."""
        try:
            completed = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DebianEtcdError(f"Debian's etcd does not run on this machine: {error}") from error
        text = (completed.stdout + completed.stderr).strip()
        match = _ETCD_VERSION.search(text)
        if completed.returncode != 0 or match is None:
            raise DebianEtcdError(
                f"Debian's etcd does not run on this machine: `etcd --version` exited "
                f"{completed.returncode} and said {text!r}"
            )
        reported_version = ".".join(match.groups())
        if reported_version != upstream:
            raise DebianEtcdError(
                f"Debian's {PACKAGE} is version {upstream}, but its etcd reports {reported_version}"
            )
        return text.splitlines()[0], reported_version


def _last_lines(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(nothing)"


def fetch_debian_etcd(
    destination_dir: Path,
    progress: Callable[[str], None],
    package: tuple[str, list[str], str] | None = None,
) -> DebianEtcd:
    """Put Debian's etcd at ``destination_dir/etcd`` (a build's staging directory).

    The package is downloaded and unpacked in a temporary directory next to it, which is
    removed whatever happens, so only a checked binary ever lands in ``destination_dir``.
    """
    with tempfile.TemporaryDirectory(prefix=".etcd-debian-", dir=destination_dir.parent) as scratch:
        fetched = DebianEtcdFetcher(progress).fetch(Path(scratch), package)
        target = destination_dir / "etcd"
        shutil.copy2(fetched.binary, target)
        target.chmod(0o755)
        return DebianEtcd(
            binary=target,
            package_version=fetched.package_version,
            etcd_version=fetched.etcd_version,
            package_lists=fetched.package_lists,
            reported=fetched.reported,
        )

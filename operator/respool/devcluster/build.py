"""Build the dev cluster's binaries from Go modules and cache them per version.

kube-apiserver, kubectl, kube-scheduler and kube-controller-manager (k8s.io/kubernetes), etcd,
helm and kwok (sigs.k8s.io/kwok: simulated Nodes and kubelets).

No prebuilt Kubernetes binary can be downloaded on our machines, but the Go module proxy is
reachable, so each binary is built from its module (recipe: ``reference/envtest-from-go.md``):

- ``k8s.io/kubernetes`` requires its staging modules (``k8s.io/api``, ``k8s.io/apiserver``, ...)
  at the fake version ``v0.0.0`` and maps them to ``./staging`` with replace lines that a
  consumer does not see. A throw-away wrapper module therefore replaces every such requirement
  with the real tag ``v0.Y.Z`` of Kubernetes ``v1.Y.Z``; the list is read from Kubernetes' own
  ``.mod`` file, so new staging modules are picked up without a code change. Requirements with
  a pseudo-version (``v0.0.0-2026...``: k8s.io/utils, kube-openapi) are real and stay as they
  are.
- kube-scheduler and kube-controller-manager come from the same k8s.io/kubernetes module as
  kube-apiserver, in a step of their own: a cache entry from before they existed gives its
  kube-apiserver and kubectl to the new entry, and only the new binaries are compiled (the
  packages they share with kube-apiserver come from Go's build cache).
- etcd's server module, helm and kwok need no replace lines; each gets its own wrapper so the
  dependency graphs never mix (kwok pins its own client-go).
- A dependency's ``godebug`` line is ignored, so it is copied into the wrapper: the binaries
  then run with the runtime defaults upstream tested, not with the newest Go's.
- Versions are stamped with ``-ldflags -X`` as upstream's release scripts do, so that
  ``kubectl version`` and ``helm version`` tell the truth.

Binaries are built into a temporary directory next to the cache entry, checked by running
them, described in ``build-info.json`` and then renamed into place in one atomic step: the
cache never holds a half-written entry. A file lock serializes concurrent builders (several
test sessions starting at once on a fresh machine build once, the others wait). Binaries of a
step that another cache entry already holds for the same module version, Go and CPU are
reused (hard-linked) instead of rebuilt, unless a rebuild is asked for.

etcd may instead come from Debian's ``etcd-server`` package (:mod:`.debian_etcd`):
``RESPOOL_ETCD_SOURCE=auto`` (the default) falls back to it, saying so, when building etcd from
Go modules fails; ``debian`` uses it directly; ``go`` never does. Such a set is cached under its
own key (``..._etcd-debian_...``), so the Go-built set keeps its name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from respool.devcluster.debian_etcd import PACKAGE as DEBIAN_ETCD_PACKAGE
from respool.devcluster.debian_etcd import DebianEtcdFetcher, fetch_debian_etcd
from respool.devcluster.errors import (
    BuildError,
    DebianEtcdError,
    EtcdSourceError,
    GoMissingError,
    ProxyUnreachableError,
)
from respool.devcluster.versions import (
    DEFAULT_VERSIONS,
    ETCD_SOURCE_ENV,
    ETCD_SOURCES,
    Versions,
    cache_home,
    host_goarch,
)

#: The binaries every cache entry holds.
BINARIES = (
    "kube-apiserver",
    "kubectl",
    "etcd",
    "helm",
    "kube-scheduler",
    "kube-controller-manager",
    "kwok",
)
#: Oldest Go that builds all the modules (their go.mod files say ``go 1.26.0``).
MINIMUM_GO = (1, 26)
#: Set to a directory holding all of BINARIES to use them instead of building.
BIN_DIR_ENV = "RESPOOL_BIN_DIR"
BUILD_INFO = "build-info.json"
GO_ETCD_MODULE = "go.etcd.io/etcd/server/v3"

Progress = Callable[[str], None]

# A staging requirement of k8s.io/kubernetes: exactly v0.0.0, not a v0.0.0-<date>-<hash> pseudo-version.
_STAGING_REQUIREMENT = re.compile(r"^\s*(?:require\s+)?(k8s\.io/[a-z0-9-]+) v0\.0\.0\s*(//.*)?$")
_NETWORK_FAILURE = re.compile(
    r"dial tcp|no such host|connection refused|i/o timeout|TLS handshake timeout|proxyconnect"
    r"|network is unreachable|connection reset|server misbehaving|Client\.Timeout"
    r"|no route to host|temporary failure in name resolution",
    re.IGNORECASE,
)
_PROGRESS_EVERY_SECONDS = 20.0


def stderr_progress(message: str) -> None:
    """Default progress sink: one line on stderr, flushed at once."""
    print(f"respool dev: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class GoToolchain:
    """The Go installation that builds the binaries."""

    executable: str
    version: str  # e.g. "go1.26.8"
    goarch: str
    goproxy: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        match = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", self.version)
        if not match:
            return (0,)
        return tuple(int(part) for part in match.groups(default="0"))


def find_go() -> GoToolchain:
    """Locate ``go`` on PATH and check it is new enough; GoMissingError says what to do if not."""
    executable = shutil.which("go")
    if executable is None:
        raise GoMissingError(
            "Go is not installed or not on PATH. respool builds "
            + ", ".join(BINARIES)
            + f" from Go modules and needs Go >= {MINIMUM_GO[0]}.{MINIMUM_GO[1]}: install it "
            "from https://go.dev/dl/ (or your package manager) and put its bin directory on PATH. "
            f"If you already have the binaries, point {BIN_DIR_ENV} at the directory holding "
            + ", ".join(BINARIES)
            + "."
        )
    try:
        completed = subprocess.run(
            [executable, "env", "-json", "GOVERSION", "GOARCH", "GOPROXY"],
            capture_output=True,
            text=True,
            timeout=60,
            env=go_environment(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GoMissingError(f"could not run {executable}: {error}") from error
    if completed.returncode != 0:
        raise GoMissingError(
            f"`{executable} env` failed (exit {completed.returncode}): {completed.stderr.strip()}"
        )
    values = json.loads(completed.stdout)
    toolchain = GoToolchain(
        executable=executable,
        version=values.get("GOVERSION", ""),
        goarch=values.get("GOARCH", ""),
        goproxy=values.get("GOPROXY", ""),
    )
    if toolchain.version_tuple[:2] < MINIMUM_GO:
        raise GoMissingError(
            f"{executable} is {toolchain.version}, but building Kubernetes "
            f"{DEFAULT_VERSIONS.kubernetes} needs Go >= {MINIMUM_GO[0]}.{MINIMUM_GO[1]}. "
            "Install a newer Go from https://go.dev/dl/ and put it first on PATH."
        )
    return toolchain


def go_environment() -> dict[str, str]:
    """The environment every ``go`` command runs with.

    Static binaries like upstream's (no C compiler needed); the local toolchain only, so the
    cache key's Go version is the one that really compiled; no go.work of the user's leaking in.
    """
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env["GOTOOLCHAIN"] = "local"
    env["GOWORK"] = "off"
    return env


def bin_root() -> Path:
    return cache_home() / "bin"


def etcd_source() -> str:
    """``$RESPOOL_ETCD_SOURCE`` (go, debian or auto; default auto), checked."""
    raw = os.environ.get(ETCD_SOURCE_ENV, "")
    value = raw.strip().lower() or "auto"
    if value not in ETCD_SOURCES:
        raise EtcdSourceError(
            f"{ETCD_SOURCE_ENV}={raw!r} is not one of go, debian, auto. Use go to build etcd from "
            "Go modules only, debian to take it from Debian's etcd-server package, or auto (the "
            "default) to build it and fall back to Debian's package when the build fails."
        )
    return value


def _entry_prefixes(versions: Versions, source: str) -> list[str]:
    """Cache-key prefixes of the sets ``source`` may use, most preferred first."""
    go_built, debian = versions.key_prefix(), versions.debian_etcd_key_prefix()
    return {"go": [go_built], "debian": [debian], "auto": [go_built, debian]}[source]


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds every binary (executable) and its build-info.json."""
    if not (directory / BUILD_INFO).is_file():
        return False
    return all(os.access(directory / name, os.X_OK) for name in BINARIES)


def cached_bin_dir(versions: Versions = DEFAULT_VERSIONS) -> Path | None:
    """A complete cache entry for ``versions`` if one exists, without building or running Go.

    Prefers the entry for the installed Go; without Go, any entry for these versions and this
    CPU (the binaries are static, the Go that built them is irrelevant to running them). Which
    etcd is acceptable follows ``$RESPOOL_ETCD_SOURCE``: with ``auto`` a Go-built set is
    preferred to one holding Debian's etcd.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        path = Path(override)
        return path if all(os.access(path / name, os.X_OK) for name in BINARIES) else None
    prefixes = _entry_prefixes(versions, etcd_source())
    root = bin_root()
    if not root.is_dir():
        return None
    try:
        toolchain: GoToolchain | None = find_go()
    except GoMissingError:
        toolchain = None
    if toolchain is not None:
        for prefix in prefixes:
            exact = root / f"{prefix}_{toolchain.version}_{toolchain.goarch}"
            if is_complete(exact):
                return exact
    suffix = f"_{host_goarch()}"
    for prefix in prefixes:
        candidates = sorted(
            entry
            for entry in root.iterdir()
            if entry.name.startswith(prefix + "_") and entry.name.endswith(suffix) and is_complete(entry)
        )
        if candidates:
            return candidates[-1]
    return None


def read_build_info(directory: Path) -> dict[str, Any]:
    """The ``build-info.json`` of a cache entry ({} when absent or unreadable)."""
    try:
        info = json.loads((directory / BUILD_INFO).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def etcd_origin(directory: Path) -> dict[str, str]:
    """Which etcd ``directory`` holds and where it came from, for ``respool dev status|bin``.

    Keys: ``source`` (go, debian or unknown), ``version``, ``description`` (one line).
    """
    info = read_build_info(directory)
    etcd = info.get("etcd")
    if not isinstance(etcd, dict):
        versions = info.get("versions")
        if isinstance(versions, dict) and versions.get("etcd"):
            # Entries built before the Debian fallback existed were all Go-built.
            etcd = {"source": "go", "version": versions["etcd"], "module": GO_ETCD_MODULE}
        else:
            return {
                "source": "unknown",
                "version": "",
                "description": f"etcd from {directory} (no build-info.json: not built by respool)",
            }
    source = str(etcd.get("source", "unknown"))
    version = str(etcd.get("version", ""))
    if source == "debian":
        description = (
            f"etcd {version} from Debian's {DEBIAN_ETCD_PACKAGE} {etcd.get('package_version', '?')}"
        )
        reason = etcd.get("fallback_reason")
        description += f" (fallback: {reason})" if reason else f" ({ETCD_SOURCE_ENV}=debian)"
    else:
        description = f"etcd {version} built from {etcd.get('module', GO_ETCD_MODULE)}@{version}"
    return {"source": source, "version": version, "description": description}


@dataclass(frozen=True)
class BuildStep:
    """One wrapper module and the binaries built from it in one ``go build``."""

    name: str
    module: str
    version: str
    packages: dict[str, str]  # binary name -> Go package
    staging_replaces: bool = False
    ldflags: Callable[[ModuleFacts, Versions], list[str]] = field(default=lambda _f, _v: [])
    #: Copy the module's own ``replace`` lines that name another module (a dependency's replaces
    #: are ignored by Go, and some modules are only correct with theirs); local-path ones are
    #: dropped, their requirement names the published version.
    module_replaces: bool = False
    #: More ``replace`` lines (``"old => new version"``), each with its reason in the step's caller.
    extra_replaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModuleFacts:
    """What the module proxy says about the module a step builds."""

    mod_file: Path
    release_time: str  # RFC 3339, from the proxy's .info
    commit: str  # VCS hash when the proxy knows it, else ""


def _kubernetes_ldflags(facts: ModuleFacts, versions: Versions) -> list[str]:
    # As hack/lib/version.sh does, for both version packages (server and client side).
    major, minor = versions.kubernetes.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": versions.kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        # The release's time, not the build's: identical inputs give identical binaries.
        "buildDate": facts.release_time,
    }
    if facts.commit:
        values["gitCommit"] = facts.commit
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
    return flags


def _helm_ldflags(facts: ModuleFacts, versions: Versions) -> list[str]:
    # As helm's Makefile does; k8sVersion* come from helm's own client-go (v0.Y -> 1.Y), which
    # is what offline `helm template` then assumes as the cluster version.
    flags = [
        f"-X helm.sh/helm/v3/internal/version.version={versions.helm}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    if facts.commit:
        flags.append(f"-X helm.sh/helm/v3/internal/version.gitCommit={facts.commit}")
    client_go = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", facts.mod_file.read_text(), re.M)
    if client_go:
        for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={client_go[1]}"]
    return flags


def _kwok_ldflags(_facts: ModuleFacts, versions: Versions) -> list[str]:
    # As kwok's hack/releases.sh does; `kwok --version` then names the release.
    return [f"-X sigs.k8s.io/kwok/pkg/consts.Version={versions.kwok}"]


def build_steps(versions: Versions) -> list[BuildStep]:
    return [
        BuildStep(
            name="kubernetes",
            module="k8s.io/kubernetes",
            version=versions.kubernetes,
            packages={
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            staging_replaces=True,
            ldflags=_kubernetes_ldflags,
        ),
        # A step of its own (not more packages in the one above): entries built before these
        # two existed still lend their kube-apiserver and kubectl, and a failure here names
        # exactly what failed.
        BuildStep(
            name="kubernetes-controllers",
            module="k8s.io/kubernetes",
            version=versions.kubernetes,
            packages={
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            },
            staging_replaces=True,
            ldflags=_kubernetes_ldflags,
        ),
        BuildStep(
            name="kwok",
            module="sigs.k8s.io/kwok",
            version=versions.kwok,
            packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            ldflags=_kwok_ldflags,
        ),
        BuildStep(
            name="helm",
            module="helm.sh/helm/v3",
            version=versions.helm,
            packages={"helm": "helm.sh/helm/v3/cmd/helm"},
            ldflags=_helm_ldflags,
        ),
        # Last, so that a fallback to Debian's etcd is decided once the rest has been built.
        BuildStep(
            name="etcd",
            module=GO_ETCD_MODULE,
            version=versions.etcd,
            # The server module's root package is etcd's main (it calls etcdmain.Main).
            packages={"etcd": GO_ETCD_MODULE},
        ),
    ]


def staging_replacements(mod_text: str, staging_version: str) -> dict[str, str]:
    """``{module: version}`` for every ``k8s.io/<name> v0.0.0`` requirement in a go.mod text.

    Pseudo-versions such as ``v0.0.0-20260101000000-abcdef123456`` are real versions and are
    deliberately not matched.
    """
    replacements = {}
    for line in mod_text.splitlines():
        match = _STAGING_REQUIREMENT.match(line)
        if match:
            replacements[match[1]] = staging_version
    return dict(sorted(replacements.items()))


def module_replace_lines(mod_text: str) -> list[str]:
    """The ``replace`` directives of a go.mod text (single-line or block form) that point at
    another module version, as ``"old => new version"``; those pointing at a local directory
    (``=> ./api``) are left out."""
    lines: list[str] = []
    in_block = False
    for line in mod_text.splitlines():
        stripped = line.split("//", 1)[0].strip()
        if in_block:
            if stripped.startswith(")"):
                in_block = False
            elif stripped:
                lines.append(stripped)
        elif re.match(r"^replace\s*\($", stripped):
            in_block = True
        elif stripped.startswith("replace "):
            lines.append(stripped.removeprefix("replace ").strip())
    return [line for line in lines if not re.search(r"=>\s*\.{1,2}/", line)]


def godebug_lines(mod_text: str) -> list[str]:
    """The ``godebug`` directives of a go.mod text (single-line or block form), verbatim."""
    lines: list[str] = []
    in_block = False
    for line in mod_text.splitlines():
        stripped = line.strip()
        if in_block:
            lines.append(line)
            if stripped.startswith(")"):
                in_block = False
        elif re.match(r"^godebug\s*\(", stripped):
            lines.append(line)
            in_block = not stripped.endswith(")")
        elif re.match(r"^godebug\s", stripped):
            lines.append(line)
    return lines


def go_directive(mod_text: str) -> str:
    match = re.search(r"^go\s+(\S+)", mod_text, re.M)
    return match[1] if match else "1.26.0"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class StepResult:
    binaries: list[str]
    module: str
    version: str
    download_seconds: float
    build_seconds: float
    cpu_seconds: float
    max_rss_mib: float
    #: The cache entry whose binaries were hard-linked instead of building them ("" if built).
    reused_from: str = ""


def _first_line(error: BaseException) -> str:
    """The gist of an error: its first sentence (the advice after it is for a person, not
    for a one-line note such as "falling back because ...")."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return re.split(r"\.\s+(?=[A-Z])", text.splitlines()[0])[0].rstrip(".")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed: a plain copy will do
        shutil.copy2(source, target)


class Builder:
    """Builds one cache entry. Use :func:`ensure_binaries` rather than this class directly.

    ``etcd_source`` is go, debian or auto (see :func:`etcd_source`); ``reuse`` lets a step take
    its binaries from another cache entry built from the same module version by the same Go.
    """

    def __init__(
        self,
        toolchain: GoToolchain,
        versions: Versions,
        progress: Progress = stderr_progress,
        *,
        etcd_source: str = "go",
        reuse: bool = True,
    ) -> None:
        self.toolchain = toolchain
        self.versions = versions
        self.progress = progress
        self.etcd_source = etcd_source
        self.reuse = reuse
        self.key = versions.cache_key(toolchain.version, toolchain.goarch)
        self.debian_etcd_key = versions.debian_etcd_cache_key(toolchain.version, toolchain.goarch)
        self.workspace = cache_home() / "build" / self.key
        self.env = go_environment()

    # -- running go -------------------------------------------------------------------------

    def _go(
        self, args: Sequence[str], cwd: Path, log: Path, what: str, network: bool
    ) -> tuple[float, float, float]:
        """Run ``go args`` with output appended to ``log``; progress lines while it runs.

        Returns (wall seconds, CPU seconds, max RSS MiB of the process tree). Raises
        ProxyUnreachableError / BuildError with the log's tail when it fails.
        """
        started = time.monotonic()
        with log.open("a") as log_file:
            log_file.write(f"\n$ go {' '.join(args)}\n")
            log_file.flush()
            process = subprocess.Popen(
                [self.toolchain.executable, *args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            last_report = started
            try:
                while True:
                    # wait4 gives the rusage of go *and* the compilers and linker it waited for.
                    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                    if pid:
                        break
                    time.sleep(0.5)
                    now = time.monotonic()
                    if now - last_report >= _PROGRESS_EVERY_SECONDS:
                        self.progress(f"{what}: {now - started:.0f}s elapsed")
                        last_report = now
            except BaseException:
                process.kill()
                process.wait()
                raise
            process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        cpu = usage.ru_utime + usage.ru_stime
        max_rss_mib = usage.ru_maxrss / 1024.0  # Linux reports KiB
        if process.returncode != 0:
            tail = _tail(log)
            if network and _NETWORK_FAILURE.search(tail):
                raise ProxyUnreachableError(
                    f"{what} failed: the Go module proxy ({self.toolchain.goproxy or 'GOPROXY unset'}) "
                    "could not be reached. Check the network or proxy settings (GOPROXY, HTTPS_PROXY), "
                    f"then run `respool dev build` again. Last lines of {log}:\n{tail}"
                )
            raise BuildError(
                f"{what} failed (go exit status {process.returncode}); nothing was cached. Fix "
                "what go reports below, then run `respool dev build` again (what was already "
                f"compiled is reused from Go's build cache). Last lines of {log}:\n{tail}"
            )
        return wall, cpu, max_rss_mib

    def _module_facts(self, step: BuildStep, cwd: Path, log: Path) -> ModuleFacts:
        completed_json = cwd / ".download.json"
        with completed_json.open("w") as out:
            completed = subprocess.run(
                [self.toolchain.executable, "mod", "download", "-json", f"{step.module}@{step.version}"],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        output = completed_json.read_text()
        with log.open("a") as log_file:
            log_file.write(f"$ go mod download -json {step.module}@{step.version}\n{output}{completed.stderr}")
        try:
            info = json.loads(output) if output.strip() else {}
        except json.JSONDecodeError:
            info = {}
        if completed.returncode != 0 or info.get("Error") or not info.get("GoMod"):
            message = info.get("Error") or completed.stderr.strip() or output.strip()
            if _NETWORK_FAILURE.search(message):
                raise ProxyUnreachableError(
                    f"could not download {step.module}@{step.version}: the Go module proxy "
                    f"({self.toolchain.goproxy or 'GOPROXY unset'}) is unreachable. Check the network "
                    "or proxy settings (GOPROXY, HTTPS_PROXY), then run `respool dev build` again.\n"
                    f"go said: {message}"
                )
            raise BuildError(f"could not download {step.module}@{step.version}: {message}")
        details: dict[str, object] = {}
        if info.get("Info"):
            try:
                details = json.loads(Path(info["Info"]).read_text())
            except (OSError, json.JSONDecodeError):
                details = {}
        origin = details.get("Origin")
        commit = origin.get("Hash", "") if isinstance(origin, dict) else ""
        release_time = str(details.get("Time") or "1970-01-01T00:00:00Z")
        return ModuleFacts(mod_file=Path(info["GoMod"]), release_time=release_time, commit=str(commit))

    # -- one step ---------------------------------------------------------------------------

    def _build_step(self, step: BuildStep, out_dir: Path) -> StepResult:
        names = ", ".join(step.packages)
        cwd = self.workspace / step.name
        if cwd.exists():
            shutil.rmtree(cwd)
        cwd.mkdir(parents=True)
        log = self.workspace / f"{step.name}.log"
        log.write_text(f"respool dev build: {names} from {step.module}@{step.version}\n")

        self.progress(f"downloading {step.module}@{step.version} and its dependencies")
        download_started = time.monotonic()
        facts = self._module_facts(step, cwd, log)
        mod_text = facts.mod_file.read_text()
        wrapper = [
            f"module respool.local/devcluster/{step.name}",
            "",
            f"go {go_directive(mod_text)}",
            "",
            *godebug_lines(mod_text),
            "",
        ]
        if step.staging_replaces:
            replacements = staging_replacements(mod_text, self.versions.staging_version)
            if not replacements:
                raise BuildError(
                    f"{step.module}@{step.version}'s go.mod lists no k8s.io/* v0.0.0 staging "
                    "requirements; this Kubernetes version is not laid out as respool expects."
                )
            wrapper += [f"replace {module} => {module} {version}" for module, version in replacements.items()]
        if step.module_replaces:
            wrapper += [f"replace {line}" for line in module_replace_lines(mod_text)]
        wrapper += [f"replace {line}" for line in step.extra_replaces]
        (cwd / "go.mod").write_text("\n".join(wrapper) + "\n")
        tools = [f"{package}@{step.version}" for package in step.packages.values()]
        self._go(["get", "-tool", *tools], cwd, log, f"resolving {names}", network=True)
        download_seconds = time.monotonic() - download_started

        self.progress(f"building {names} ({step.module} {step.version}); this takes minutes the first time")
        ldflags = " ".join(["-s", "-w", *step.ldflags(facts, self.versions)])
        packages = list(step.packages.values())
        output = str(out_dir / next(iter(step.packages))) if len(packages) == 1 else str(out_dir) + os.sep
        wall, cpu, rss = self._go(
            ["build", "-trimpath", f"-ldflags={ldflags}", "-o", output, *packages],
            cwd,
            log,
            f"building {names}",
            network=True,
        )
        for name in step.packages:
            if not os.access(out_dir / name, os.X_OK):
                raise BuildError(f"go build reported success but {out_dir / name} is missing; see {log}")
        self.progress(f"built {names} in {wall:.0f}s (CPU {cpu:.0f}s, peak RSS {rss:.0f} MiB)")
        return StepResult(
            binaries=list(step.packages),
            module=step.module,
            version=step.version,
            download_seconds=round(download_seconds, 1),
            build_seconds=round(wall, 1),
            cpu_seconds=round(cpu, 1),
            max_rss_mib=round(rss, 1),
        )

    def _reusable_step(self, step: BuildStep, out_dir: Path) -> StepResult | None:
        """Hard-link ``step``'s binaries from a cache entry that built the same module version
        with the same Go for the same CPU; None when no entry has them."""
        root = out_dir.parent
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            info = read_build_info(entry)
            versions = info.get("versions")
            if not isinstance(versions, dict) or (versions.get("go"), versions.get("goarch")) != (
                self.toolchain.version,
                self.toolchain.goarch,
            ):
                continue
            for recorded in info.get("steps", []):
                if not isinstance(recorded, dict):
                    continue
                if (recorded.get("module"), recorded.get("version")) != (step.module, step.version):
                    continue
                # One module can feed several steps (k8s.io/kubernetes does): the record must
                # be of this step's binaries, or its timings would describe another build.
                if sorted(recorded.get("binaries") or []) != sorted(step.packages):
                    continue
                if not all(os.access(entry / name, os.X_OK) for name in step.packages):
                    continue
                for name in step.packages:
                    _link_or_copy(entry / name, out_dir / name)
                self.progress(f"reusing {', '.join(step.packages)} ({step.module} {step.version}) from {entry}")
                known = {name for name in StepResult.__dataclass_fields__}
                fields = {key: value for key, value in recorded.items() if key in known}
                fields["reused_from"] = fields.get("reused_from") or entry.name
                return StepResult(**fields)
        return None

    def _obtain_step(self, step: BuildStep, out_dir: Path) -> StepResult:
        if self.reuse:
            reused = self._reusable_step(step, out_dir)
            if reused is not None:
                return reused
        return self._build_step(step, out_dir)

    def _debian_etcd(self, out_dir: Path, go_failure: BaseException | None) -> dict[str, Any]:
        """Put Debian's etcd in ``out_dir``; ``go_failure`` is why the Go build was given up."""
        try:
            return self._fetch_debian_etcd(out_dir, go_failure)
        except DebianEtcdError as error:
            if go_failure is None:
                raise
            raise DebianEtcdError(
                f"building etcd from Go modules failed: {go_failure}\n"
                f"and the fallback, Debian's {DEBIAN_ETCD_PACKAGE}, is not available either: {error}"
            ) from error

    def _fetch_debian_etcd(self, out_dir: Path, go_failure: BaseException | None) -> dict[str, Any]:
        package = DebianEtcdFetcher(self.progress).find_package()
        if go_failure is not None:
            self.progress(
                f"building etcd from Go modules failed: {_first_line(go_failure)}; "
                f"falling back to Debian's {DEBIAN_ETCD_PACKAGE} {package[0]}"
            )
        else:
            self.progress(f"{ETCD_SOURCE_ENV}=debian: using Debian's {DEBIAN_ETCD_PACKAGE} {package[0]}")
        fetched = fetch_debian_etcd(out_dir, self.progress, package)
        self.progress(
            f"etcd {fetched.etcd_version} from Debian's {DEBIAN_ETCD_PACKAGE} {fetched.package_version} ready"
        )
        return {
            "source": "debian",
            "version": fetched.etcd_version,
            "package": DEBIAN_ETCD_PACKAGE,
            "package_version": fetched.package_version,
            "package_lists": fetched.package_lists,
            "requested": self.etcd_source,
            "fallback_reason": _first_line(go_failure) if go_failure is not None else None,
        }

    def _verify(self, out_dir: Path, etcd_version: str) -> dict[str, str]:
        """Run each binary's version command; its output must name the version asked for."""
        checks = {
            "kube-apiserver": (["--version"], self.versions.kubernetes),
            "kubectl": (["version", "--client"], self.versions.kubernetes),
            "etcd": (["--version"], etcd_version.lstrip("v")),
            "helm": (["version", "--short"], self.versions.helm),
            "kube-scheduler": (["--version"], self.versions.kubernetes),
            "kube-controller-manager": (["--version"], self.versions.kubernetes),
            "kwok": (["--version"], self.versions.kwok.lstrip("v")),
        }
        reported = {}
        for name, (args, expected) in checks.items():
            try:
                completed = subprocess.run(
                    [str(out_dir / name), *args], capture_output=True, text=True, timeout=60, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise BuildError(f"the freshly built {name} does not run: {error}") from error
            text = (completed.stdout + completed.stderr).strip()
            if completed.returncode != 0 or expected not in text:
                raise BuildError(
                    f"the freshly built {name} reports {text!r} (exit {completed.returncode}); "
                    f"expected it to name {expected}"
                )
            reported[name] = text.splitlines()[0]
        return reported

    def _steps(self, staging: Path) -> tuple[list[StepResult], dict[str, Any]]:
        """Every step into ``staging``; returns the step results and where etcd came from."""
        results: list[StepResult] = []
        etcd: dict[str, Any] = {}
        for step in build_steps(self.versions):
            if step.name != "etcd":
                results.append(self._obtain_step(step, staging))
                continue
            if self.etcd_source == "debian":
                etcd = self._debian_etcd(staging, go_failure=None)
                continue
            try:
                results.append(self._obtain_step(step, staging))
                etcd = {"source": "go", "version": step.version, "module": step.module}
            except (BuildError, ProxyUnreachableError, OSError) as failure:
                if self.etcd_source != "auto":
                    raise
                # go may have left part of a binary behind; Debian's replaces it.
                (staging / "etcd").unlink(missing_ok=True)
                etcd = self._debian_etcd(staging, go_failure=failure)
        return results, etcd

    def build(self, destination: Path | None = None) -> Path:
        """Build every binary and move the finished set into the cache atomically.

        The set lands in ``destination`` when given, else under the key of the etcd it holds
        (:attr:`key` for a Go-built etcd, :attr:`debian_etcd_key` for Debian's); returns where.
        """
        root = destination.parent if destination is not None else bin_root()
        root.mkdir(parents=True, exist_ok=True)
        self.workspace.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.key}.partial-", dir=root))
        started = time.monotonic()
        try:
            results, etcd = self._steps(staging)
            reported = self._verify(staging, etcd["version"])
            if destination is None:
                destination = root / (self.key if etcd["source"] == "go" else self.debian_etcd_key)
            info = {
                "versions": {
                    "kubernetes": self.versions.kubernetes,
                    "etcd": etcd["version"] if etcd["source"] == "go" else f"v{etcd['version']}",
                    "helm": self.versions.helm,
                    "kwok": self.versions.kwok,
                    "go": self.toolchain.version,
                    "goarch": self.toolchain.goarch,
                },
                "etcd": etcd,
                "reported": reported,
            }
            publish_cache_entry(staging, destination, info, started=started, results=results,
                                binaries=BINARIES)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return destination


@contextmanager
def _exclusive_lock(path: Path, progress: Progress, waiting_message: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(waiting_message)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_binaries(
    versions: Versions = DEFAULT_VERSIONS,
    *,
    progress: Progress = stderr_progress,
    rebuild: bool = False,
) -> Path:
    """The directory holding every binary of :data:`BINARIES`; builds them if needed.

    ``$RESPOOL_BIN_DIR``, when set, is used as is (it must hold all of them). Otherwise
    the cache entry for these versions and the installed Go is used, or built (minutes when
    cold). Without Go, an entry for these versions built by another Go is accepted.
    ``$RESPOOL_ETCD_SOURCE`` (go, debian, auto; default auto) says where etcd may come from:
    with auto, a failed etcd build falls back to Debian's etcd-server, and a set holding it is
    used until a Go-built set exists (``respool dev build --rebuild`` tries Go again).
    """
    source = etcd_source()
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        path = Path(override)
        missing = [name for name in BINARIES if not os.access(path / name, os.X_OK)]
        if missing:
            raise BuildError(
                f"{BIN_DIR_ENV}={override} lacks executable {', '.join(missing)}; "
                f"unset {BIN_DIR_ENV} to let respool build them."
            )
        return path
    try:
        toolchain = find_go()
    except GoMissingError:
        fallback = cached_bin_dir(versions)
        if fallback is not None and not rebuild:
            return fallback
        raise
    go_built = bin_root() / versions.cache_key(toolchain.version, toolchain.goarch)
    with_debian_etcd = bin_root() / versions.debian_etcd_cache_key(toolchain.version, toolchain.goarch)

    def usable() -> Path | None:
        if rebuild:
            return None
        if source in ("go", "auto") and is_complete(go_built):
            return go_built
        if source in ("debian", "auto") and is_complete(with_debian_etcd):
            # Never silently: tests and `respool dev up` then run against an older etcd.
            advice = (
                f"; `{ETCD_SOURCE_ENV}=go respool dev build` builds etcd from Go modules instead"
                if source == "auto"
                else ""
            )
            progress(f"using {etcd_origin(with_debian_etcd)['description']}{advice}")
            return with_debian_etcd
        return None

    found = usable()
    if found is not None:
        return found
    with _exclusive_lock(
        bin_root() / ".build.lock",
        progress,
        "another respool process is building the binaries; waiting for it to finish",
    ):
        # The process we waited for may have built exactly this entry.
        found = usable()
        if found is not None:
            return found
        etcd_from = {
            "go": f"etcd {versions.etcd}",
            "auto": f"etcd {versions.etcd} (Debian's etcd-server if that fails)",
            "debian": "etcd from Debian's etcd-server",
        }[source]
        progress(
            f"building Kubernetes {versions.kubernetes} (kube-apiserver, kubectl, kube-scheduler, "
            f"kube-controller-manager), kwok {versions.kwok}, helm {versions.helm} and {etcd_from} "
            f"with {toolchain.version} into {bin_root()}"
        )
        started = time.monotonic()
        builder = Builder(toolchain, versions, progress, etcd_source=source, reuse=not rebuild)
        destination = builder.build()
        progress(f"binaries ready in {time.monotonic() - started:.0f}s: {destination}")
        return destination


def publish_cache_entry(staging: Path, destination: Path, info: dict[str, Any], *,
                        started: float, results: Sequence[Any],
                        binaries: Sequence[str]) -> None:
    """Record the build in `staging` (`info`, then what every build records: when, how long
    since `started` (time.monotonic), its steps, its binaries' sizes, the CPUs) and make it the
    cache entry `destination` by renaming it, so a reader sees a whole entry or none. An entry
    already there (damaged: a file deleted by hand, or an explicit rebuild) is swapped out."""
    record = {
        **info,
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_seconds": round(time.monotonic() - started, 1),
        "steps": [result.__dict__ for result in results],
        "binary_bytes": {name: (staging / name).stat().st_size for name in binaries},
        "cpu_count": os.cpu_count(),
    }
    (staging / BUILD_INFO).write_text(json.dumps(record, indent=2) + "\n")
    staging.chmod(0o755)
    if destination.exists():
        retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        destination.rename(retired)
        staging.rename(destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(destination)

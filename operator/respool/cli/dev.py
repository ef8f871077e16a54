"""`respool dev up|down|status|kubeconfig|bin|build` — the embedded local cluster: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok's simulated Nodes.

Progress and errors go to stderr; stdout carries only what scripts consume (a path, JSON),
so ``export KUBECONFIG=$(respool dev kubeconfig)`` and ``PATH=$(respool dev bin):$PATH`` work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from respool.devcluster import shared
from respool.devcluster.build import BINARIES, cached_bin_dir, ensure_binaries, etcd_origin
from respool.devcluster.errors import DevClusterError
from respool.pool.hostlist import Hostlist

EXIT_NOT_RUNNING = 3


def _error(message: str) -> int:
    print(f"respool dev: error: {message}", file=sys.stderr)
    return 1


def _node_names(args: argparse.Namespace) -> list[str]:
    """``--nodes N`` (node-0 ...) then every ``--node`` hostlist, expanded, without repeats."""
    if args.nodes < 0:
        raise DevClusterError(f"--nodes must be 0 or more, not {args.nodes}")
    names = shared.numbered_nodes(args.nodes)
    for text in args.node:
        try:
            names += Hostlist(text).expand()
        except ValueError as error:
            raise DevClusterError(f"--node {text!r}: {error}") from error
    return list(dict.fromkeys(names))


def _up(args: argparse.Namespace) -> int:
    names = _node_names(args)
    result = shared.up(api_port=args.port, start_timeout=args.timeout, nodes=names)
    plane = result.plane
    verb = "already running" if result.reused else f"started in {result.seconds:.1f}s"
    print(f"respool dev: cluster {verb}: {plane.server}", file=sys.stderr)
    if names:
        print(
            f"respool dev: {len(names)} simulated Node(s) Ready"
            f" ({len(result.nodes_created)} new): {Hostlist(names).encode()}",
            file=sys.stderr,
        )
    print(
        "respool dev: use it with\n"
        f"  export KUBECONFIG={plane.kubeconfig}\n"
        f"  export PATH={plane.bin_dir}:$PATH\n"
        "  kubectl get nodes,pods -A",
        file=sys.stderr,
    )
    return 0


def _down(_args: argparse.Namespace) -> int:
    if shared.down():
        print("respool dev: cluster stopped (every process) and cleaned up", file=sys.stderr)
    else:
        print("respool dev: no control plane was running", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    plane = shared.current()
    report: dict[str, Any] = {"running": False, "home": str(shared.dev_home())}
    if plane is not None and plane.state is not None:
        alive = plane.processes_alive()
        ready = all(alive.values()) and plane.readyz()
        state = plane.state
        etcd = etcd_origin(Path(state.bin_dir))
        versions = dict(state.versions)
        if etcd["version"]:
            # What the bin dir really holds (Debian's etcd when the fallback was used).
            versions["etcd"] = etcd["version"] if etcd["version"].startswith("v") else f"v{etcd['version']}"
        processes: dict[str, dict[str, Any]] = {
            "etcd": {"pid": state.etcd_pid, "alive": alive["etcd"], "port": state.etcd_port},
            "kube-apiserver": {
                "pid": state.apiserver_pid,
                "alive": alive["kube-apiserver"],
                "port": state.api_port,
            },
        }
        for name in plane.expected_processes()[2:]:
            component = state.components.get(name, {})
            processes[name] = {
                "pid": component.get("pid", 0),
                "alive": alive[name],
                "port": component.get("port", 0),
            }
        for name, process in processes.items():
            process["log"] = str(plane.log_dir / f"{name}.log")
        report.update(
            running=ready,
            server=state.server,
            kubeconfig=str(plane.kubeconfig),
            bin_dir=state.bin_dir,
            processes=processes,
            down=[name for name, process in processes.items() if not process["alive"]],
            etcd_data=state.etcd_data,
            etcd=etcd,
            versions=versions,
            uptime_seconds=round(time.time() - state.started_at),
            ready_seconds=state.ready_seconds,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["running"]:
        rows = [
            ("status", "running"),
            ("server", report["server"]),
            ("kubeconfig", report["kubeconfig"]),
            ("bin", report["bin_dir"]),
            *(
                (name, f"running, pid {process['pid']}, port {process['port']}")
                for name, process in report["processes"].items()
            ),
            ("etcd data", report["etcd_data"]),
            ("etcd binary", report["etcd"]["description"]),
            ("versions", ", ".join(f"{k} {v}" for k, v in report["versions"].items())),
            ("uptime", f"{report['uptime_seconds']}s"),
        ]
        for label, value in rows:
            print(f"{label + ':':<25}{value}")
    elif plane is not None:
        dead = report["down"]
        why = f"{', '.join(dead)} not running" if dead else "kube-apiserver not ready"
        print(f"unhealthy ({why})")
        for name, process in report["processes"].items():
            state_text = "running" if process["alive"] else "DOWN"
            detail = f" (log {process['log']})" if not process["alive"] else ""
            print(f"{name + ':':<25}{state_text}, pid {process['pid']}{detail}")
        print(
            "`respool dev up` starts what is down again (a crashed kube-controller-manager, "
            "kube-scheduler or kwok alone, keeping every object), `respool dev down` cleans up"
        )
    else:
        print("stopped (start it with `respool dev up`)")
    return 0 if report["running"] else EXIT_NOT_RUNNING


def _kubeconfig(_args: argparse.Namespace) -> int:
    plane = shared.current()
    if plane is None or not plane.kubeconfig.exists():
        print(
            "respool dev: error: no control plane is running; start it with `respool dev up`",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING
    print(plane.kubeconfig)
    return 0


def _bin(args: argparse.Namespace) -> int:
    directory = cached_bin_dir() if args.no_build else ensure_binaries()
    if directory is None:
        print(
            "respool dev: error: the binaries are not built yet; run `respool dev build`",
            file=sys.stderr,
        )
        return 1
    # ensure_binaries says on stderr when the set holds Debian's etcd; stdout stays the bare
    # path for PATH=$(respool dev bin):$PATH.
    print(directory)
    return 0


def _build(args: argparse.Namespace) -> int:
    cached = None if args.rebuild else cached_bin_dir()
    directory = ensure_binaries(rebuild=args.rebuild)
    info_path = directory / "build-info.json"
    if cached == directory:
        print(f"respool dev: binaries already built, reusing {directory}", file=sys.stderr)
    elif info_path.exists():
        info = json.loads(info_path.read_text())
        for step in info.get("steps", []):
            names = ", ".join(step["binaries"])
            if step.get("reused_from"):
                print(f"respool dev: {names}: reused from {step['reused_from']}", file=sys.stderr)
                continue
            print(
                f"respool dev: {names}: built in {step['build_seconds']}s "
                f"(peak RSS {step['max_rss_mib']:.0f} MiB)",
                file=sys.stderr,
            )
    print(f"respool dev: {etcd_origin(directory)['description']}", file=sys.stderr)
    if args.gitops:
        from respool.devcluster import flux

        cached_flux = None if args.rebuild else flux.cached_flux_dir()
        flux_dir = flux.ensure_flux_binaries(rebuild=args.rebuild)
        if cached_flux == flux_dir:
            print(f"respool dev: Flux controllers already built, reusing {flux_dir}", file=sys.stderr)
        else:
            for line in flux.build_summary(flux_dir):
                print(f"respool dev: {line}", file=sys.stderr)
    print(directory)
    return 0


def _guarded(handler: Any) -> Any:
    """Turn a DevClusterError into its message and exit status 1 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except DevClusterError as error:
            return _error(str(error))

    return run


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``respool dev ...`` to the `respool` parser."""
    dev = sub.add_parser(
        "dev",
        help="the embedded local Kubernetes cluster (control plane and simulated Nodes)",
        description=(
            "Build (once, cached) "
            + ", ".join(BINARIES)
            + " from Go modules and run a local cluster on loopback for trying respool and for "
            "its tests."
        ),
    )
    commands = dev.add_subparsers(dest="dev_command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="start the cluster (or reuse the running one) and create simulated Nodes",
        description=(
            "Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (or "
            "reuse them, starting again any that crashed). Nodes annotated "
            "kwok.x-k8s.io/node=fake are simulated by kwok: they stay Ready and Pods bound to "
            "them become Running."
        ),
    )
    up.add_argument("--port", type=int, default=None, help="kube-apiserver port (default: a free one)")
    up.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="make sure simulated Nodes node-0 ... node-<N-1> exist and are Ready",
    )
    up.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="HOSTLIST",
        help="simulated Nodes with these names, e.g. --node 'rack-a-n[0-3]' (repeatable)",
    )
    up.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)"
    )
    up.set_defaults(handler=_guarded(_up))

    down = commands.add_parser("down", help="stop every process of the cluster and remove its data")
    down.set_defaults(handler=_guarded(_down))

    status = commands.add_parser(
        "status",
        help=f"show every process and whether it runs (exit 0 when all do, else {EXIT_NOT_RUNNING})",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_guarded(_status))

    kubeconfig = commands.add_parser("kubeconfig", help="print the kubeconfig's path")
    kubeconfig.set_defaults(handler=_guarded(_kubeconfig))

    bin_parser = commands.add_parser(
        "bin", help=f"print the directory holding {', '.join(BINARIES)} (builds them if needed)"
    )
    bin_parser.add_argument(
        "--no-build", action="store_true", help="fail instead of building when not cached"
    )
    bin_parser.set_defaults(handler=_guarded(_bin))

    build = commands.add_parser(
        "build",
        help="build (or verify the cache of) the binaries only",
        description=(
            "Build " + ", ".join(BINARIES) + " from Go modules into the cache. "
            "RESPOOL_ETCD_SOURCE chooses etcd's origin: auto (default: Go modules, Debian's "
            "etcd-server package when that build fails), go, or debian."
        ),
    )
    build.add_argument("--rebuild", action="store_true", help="rebuild even when cached")
    build.add_argument(
        "--gitops",
        action="store_true",
        help="also build Flux CD's source-controller and kustomize-controller (the GitOps test's)",
    )
    build.set_defaults(handler=_guarded(_build))

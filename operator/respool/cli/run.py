"""`respool run`: the operator (kopf underneath) against the current kubeconfig."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `respool run` to the `respool` parser."""
    parser = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig (all namespaces by default)",
        description="Reconcile ResourcePools and ResourceReservations. Credentials: the Pod's "
        "service account, else $KUBECONFIG / ~/.kube/config.",
    )
    parser.add_argument(
        "--namespace", "-n", action="append", default=[], metavar="NS",
        help="serve reservations in this namespace only (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics on this port (default: off)",
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", metavar="ADDR",
        help="address for the metrics server (default 127.0.0.1; 0.0.0.0 in a Pod)",
    )
    parser.add_argument(
        "--liveness", default=None, metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (default: off)",
    )
    parser.add_argument(
        "--log-format", choices=("plain", "full", "json"), default="full",
        help="log format: json for structured logs (default: full)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only")
    parser.add_argument(
        "--pool-status-interval", type=float, default=1.0, metavar="SECONDS",
        help="at most one ResourcePool status write per pool per this many seconds",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that other `respool` commands do not pay for kopf.
    import kopf
    import prometheus_client

    from respool.controller import handlers

    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise SystemExit(f"respool run: --metrics-port {args.metrics_port} is not a port")
    if args.pool_status_interval < 0:
        raise SystemExit("respool run: --pool-status-interval must be >= 0")
    handlers.OPTIONS.namespaces = list(args.namespace)
    handlers.OPTIONS.pool_status_interval = args.pool_status_interval
    log_format = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
                  "json": kopf.LogFormat.JSON}[args.log_format]
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=log_format)
    if not args.verbose:
        # kopf logs every handler call per object; our actors log every decision instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port is not None:
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_address)
    logging.getLogger("respool").info(
        "respool operator starting (%s)",
        "namespaces " + ", ".join(args.namespace) if args.namespace else "all namespaces")
    try:
        if args.namespace:
            kopf.run(namespaces=args.namespace, standalone=True, liveness_endpoint=args.liveness)
        else:
            kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness)
    except Exception as error:
        # A failed start-up (no CRDs, no credentials) surfaces as kopf's ActivityError (not
        # exported by kopf): one clear line instead of its traceback (-v keeps the traceback).
        if args.verbose:
            raise
        cause = error.__cause__ or error
        print(f"respool run: cannot start: {cause}", file=sys.stderr)
        return 1
    return 0

"""`respool dashboard`: serve the read-only web dashboard locally with the user's kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import warnings
from typing import Any

import urllib3

from respool.client.errors import RespoolError

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "dashboard",
        help="a read-only web dashboard: every pool's timeline, live",
        description=(
            "Serve a read-only web dashboard of pools and reservations, kept live by watches. "
            "It reads the cluster with your kubeconfig, so it shows what kubectl shows you."
        ),
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument(
        "-n", "--namespace",
        help="show reservations of this namespace only (default: every namespace you may list, "
        "else the context's)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument(
        "--address", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; anyone who can reach "
        "the port sees what your credentials can read)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="SECONDS",
        help="limit for each API call (default 30)",
    )
    parser.set_defaults(handler=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    from respool.client.kube import KubeAPI
    from respool.dashboard.server import build_app, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # As kubectl: an insecure-skip-tls-verify kubeconfig is the user's choice; no nagging.
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    try:
        api = KubeAPI(args.kubeconfig, args.context, request_timeout=args.request_timeout)
    except RespoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = build_app(api, namespace=args.namespace, address=args.address)

    def ready(url: str) -> None:
        print(f"respool dashboard: {url} (cluster {api.connection.server}; Ctrl-C stops)",
              flush=True)

    try:
        asyncio.run(serve(app, args.address, args.port, ready))
    except OSError as exc:
        print(f"error: cannot listen on {args.address}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
    return 0

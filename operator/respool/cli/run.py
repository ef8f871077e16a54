"""`respool run`: the operator (kopf underneath) against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from respool.controller.leader import LeaderElector

DEFAULT_LEADER_ELECTION_ID = "respool-leader"
# A leader asked to stop gets this long to stop the controller and release the Lease before it
# exits hard; below the chart's terminationGracePeriodSeconds (30), so that the exit is ours.
SHUTDOWN_GRACE_SECONDS = 20


def _seconds(text: str) -> float:
    """A lease timing: a Go-style duration ('15s', '1m') or a number of seconds."""
    from respool.api import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a duration > 0, e.g. '15s'")
    return value


class RefusalIsNotAnError(logging.Filter):
    """kopf logs a webhook handler's AdmissionError at ERROR ("Webhook 'pods' failed
    permanently: ..."): for the admission webhook a refused Pod is the answer working as
    designed (the user gets the message), so it is logged at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.ERROR and record.name.startswith("kopf")
                and record.getMessage().startswith("Webhook 'pods' failed permanently")):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class RetryIsAWarning(logging.Filter):
    """kopf logs every retried API request at ERROR. While the API server is away (an upgrade,
    a restart) that is a stream of errors, four watches at a time, for something kopf and
    respool recover from by themselves: a retry is a WARNING. The last attempt ("escalating")
    stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("kopf"):
            message = record.getMessage()
            if message.startswith("Request attempt") and "will retry" in message:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


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
        "--dashboard-port", type=int, default=None, metavar="PORT",
        help="also serve the read-only web dashboard (`respool dashboard`) on this port, with "
        "the operator's own credentials (default: off; needs the client extra, "
        "pip install 'respool[client]')",
    )
    parser.add_argument(
        "--dashboard-address", default="127.0.0.1", metavar="ADDR",
        help="address for the dashboard (default 127.0.0.1; 0.0.0.0 behind a Service)",
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
    parser.add_argument(
        "--slow-callback-ms", type=float, default=None, metavar="MS",
        help="log each event loop callback that runs longer than MS milliseconds, with where "
        "it was (a diagnosis aid: every callback is timed; default off)",
    )
    webhook = parser.add_argument_group(
        "admission webhook",
        "Serve the mutating webhook for Pods labelled respool.io/reservation (docs/api.md, "
        "'Workloads'): kopf registers the MutatingWebhookConfiguration 'respool.io' with the "
        "current CA bundle; failurePolicy Fail (labelled Pods are refused while the operator is "
        "away; unlabelled Pods never reach it). Also lifts the scheduling gate it sets.")
    webhook.add_argument(
        "--webhook-port", type=int, default=None, metavar="PORT",
        help="serve the admission webhook (HTTPS) on this port (default: off)")
    webhook.add_argument(
        "--webhook-address", default="127.0.0.1", metavar="ADDR",
        help="address to listen on (default 127.0.0.1, where a local API server reaches it; "
        "0.0.0.0 in a Pod)")
    webhook.add_argument(
        "--webhook-host", default=None, metavar="HOST",
        help="host name or address the API server calls (default: --webhook-address)")
    webhook.add_argument(
        "--webhook-service", default=None, metavar="NAMESPACE/NAME",
        help="in a cluster: the API server calls this Service (port 443) instead of a URL")
    webhook.add_argument(
        "--webhook-cert-dir", default=None, metavar="DIR",
        help="tls.crt, tls.key (and ca.crt) from a mounted Secret; when absent, a CA and a "
        "serving certificate are made there (default: a new temporary directory)")
    election = parser.add_argument_group(
        "high availability",
        "Run several replicas: the holder of a coordination.k8s.io Lease runs the controller, "
        "the others stand by (alive, idle) and take over when it stops renewing. Timings as "
        "client-go's: lease duration > renew deadline > 1.2 x retry period.")
    election.add_argument(
        "--leader-elect", action="store_true",
        help="make decisions only while holding the leader Lease (default: off, a single "
        "replica decides alone)")
    election.add_argument(
        "--leader-election-namespace", default=None, metavar="NS",
        help="namespace of the Lease, and of the booking seal key's Lease "
        "(respool-booking-seal, kept with or without --leader-elect) (default: $POD_NAMESPACE, "
        "else the service account's or the kubeconfig context's namespace)")
    election.add_argument(
        "--leader-election-id", default=DEFAULT_LEADER_ELECTION_ID, metavar="NAME",
        help=f"name of the Lease (default {DEFAULT_LEADER_ELECTION_ID})")
    election.add_argument(
        "--leader-elect-lease-duration", type=_seconds, default=15.0, metavar="DURATION",
        help="how long a standby waits after the last renewal it saw before taking over "
        "(default 15s)")
    election.add_argument(
        "--leader-elect-renew-deadline", type=_seconds, default=10.0, metavar="DURATION",
        help="how long the leader keeps trying to renew before it stops and exits (default 10s)")
    election.add_argument(
        "--leader-elect-retry-period", type=_seconds, default=2.0, metavar="DURATION",
        help="time between attempts to acquire or renew (default 2s)")
    parser.set_defaults(handler=run)


#: Deep enough for 10,000 levels of JSON nesting, well below what overflows the C stack.
RECURSION_LIMIT = 25_000


def run(args: argparse.Namespace) -> int:
    # Imported here so that other `respool` commands do not pay for kopf.
    import kopf
    import prometheus_client

    from respool.controller import (
        handlers,
        schedule_keeper,  # noqa: F401  (registers its kopf handlers)
    )

    # A tenant's spec.config may nest deeper than Python's JSON parser goes by default
    # (the recursion limit, 1,000), and one reservation it could not read once broke the
    # watch of every reservation for good. Parsing 10,001 levels at this limit is tested on
    # the main thread's 8 MiB stack (tests/unit/test_tenancy_costs.py); the watch skips an
    # object nested deeper still rather than stop.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise SystemExit(f"respool run: --metrics-port {args.metrics_port} is not a port")
    if args.pool_status_interval < 0:
        raise SystemExit("respool run: --pool-status-interval must be >= 0")
    if args.dashboard_port is not None:
        if not 0 < args.dashboard_port < 65536:
            raise SystemExit(f"respool run: --dashboard-port {args.dashboard_port} is not a port")
        _start_dashboard(args.dashboard_address, args.dashboard_port)
    timings = None
    if args.leader_elect:
        from respool.controller.leader import LeaseTimings

        timings = LeaseTimings(lease_duration=args.leader_elect_lease_duration,
                               renew_deadline=args.leader_elect_renew_deadline,
                               retry_period=args.leader_elect_retry_period)
        try:
            timings.check()
        except ValueError as exc:
            raise SystemExit(f"respool run: {exc}") from None
        if not args.leader_election_id.strip():
            raise SystemExit("respool run: --leader-election-id must not be empty")
    if args.webhook_port is not None:
        from pathlib import Path

        from respool.controller.webhook import WebhookOptions
        from respool.controller.webhook_certs import CertificateError, check_can_make

        if not 0 < args.webhook_port < 65536:
            raise SystemExit(f"respool run: --webhook-port {args.webhook_port} is not a port")
        service = None
        if args.webhook_service is not None:
            namespace, _, name = args.webhook_service.partition("/")
            if not namespace or not name:
                raise SystemExit("respool run: --webhook-service must be NAMESPACE/NAME")
            service = (namespace, name)
        cert_dir = Path(args.webhook_cert_dir) if args.webhook_cert_dir else None
        try:
            check_can_make(cert_dir)
        except CertificateError as exc:
            raise SystemExit(f"respool run: {exc}") from None
        handlers.OPTIONS.webhook = WebhookOptions(
            port=args.webhook_port, address=args.webhook_address, host=args.webhook_host,
            cert_dir=cert_dir)
        handlers.OPTIONS.webhook_service = service
        handlers.register_webhook()
    if args.slow_callback_ms is not None:
        if args.slow_callback_ms <= 0:
            raise SystemExit("respool run: --slow-callback-ms must be > 0")
        from respool.controller.loopwatch import SlowCallbackWatch

        # Here, on the thread that runs the operator's loop (kopf's, or the leader's).
        SlowCallbackWatch(args.slow_callback_ms / 1000).install()
    handlers.OPTIONS.namespaces = list(args.namespace)
    # The operator's own namespace: the leader Lease and the booking seal key's Lease.
    handlers.OPTIONS.seal_namespace = args.leader_election_namespace
    handlers.OPTIONS.pool_status_interval = args.pool_status_interval
    log_format = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
                  "json": kopf.LogFormat.JSON}[args.log_format]
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RetryIsAWarning())
        handler.addFilter(RefusalIsNotAnError())
    if not args.verbose:
        # kopf logs every handler call per object; our actors log every decision instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port is not None:
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_address)
    logging.getLogger("respool").info(
        "respool operator starting (%s)",
        "namespaces " + ", ".join(args.namespace) if args.namespace else "all namespaces")
    scope: dict[str, Any] = (
        {"namespaces": args.namespace} if args.namespace else {"clusterwide": True})
    try:
        if timings is not None:
            return asyncio.run(_lead_then_operate(args, timings, scope))
        kopf.run(standalone=True, liveness_endpoint=args.liveness, **scope)
    except Exception as error:
        # A failed start-up (no CRDs, no credentials) surfaces as kopf's ActivityError (not
        # exported by kopf): one clear line instead of its traceback (-v keeps the traceback).
        if args.verbose:
            raise
        cause = error.__cause__ or error
        print(f"respool run: cannot start: {cause}", file=sys.stderr)
        return 1
    return 0


def _start_dashboard(address: str, port: int) -> None:
    """Serve `respool dashboard` from this process, in a thread with its own event loop (kopf's
    loop stays the operator's alone). It reads with the operator's credentials, logged in as the
    operator logs in (in a Pod: its ServiceAccount; else $KUBECONFIG), through `RestSource` - no
    Kubernetes client, which the operator's image does without - so it shows every pool and
    reservation: put it behind whatever limits who may look. A dashboard that cannot start
    stops the operator's start-up with the reason, rather than running without what was asked
    for."""
    import threading

    import kopf

    from respool.controller.handlers import connection_info
    from respool.dashboard.rest import RestSource
    from respool.dashboard.server import build_app, serve

    def log_in() -> kopf.ConnectionInfo:
        return connection_info(kopf.OperatorSettings())

    try:
        api = RestSource(log_in(), relogin=log_in)
    except (kopf.LoginError, OSError, ValueError) as exc:
        raise SystemExit(f"respool run: --dashboard-port: {exc}") from None
    app = build_app(api, namespace=None, address=address)
    logger = logging.getLogger("respool.dashboard")

    def run() -> None:
        try:
            asyncio.run(serve(app, address, port,
                              lambda url: logger.info("dashboard serving on %s", url)))
        except OSError as exc:
            logger.error("dashboard: cannot listen on %s:%s: %s", address, port, exc)

    threading.Thread(target=run, name="respool-dashboard", daemon=True).start()


async def _lead_then_operate(args: argparse.Namespace, timings: Any,
                             scope: dict[str, Any]) -> int:
    """Stand by until this process holds the Lease, then run the operator while renewing it;
    release it once the operator has stopped (SIGTERM)."""
    import kopf

    from respool.controller import handlers
    from respool.controller.kubeapi import KubeApi
    from respool.controller.leader import LeaderElector, default_identity

    logger = logging.getLogger("respool")
    info = handlers.connection_info(kopf.OperatorSettings())
    namespace = (args.leader_election_namespace or os.environ.get("POD_NAMESPACE")
                 or info.default_namespace or "default")

    def lease_api() -> KubeApi:
        # Fresh credentials each time (a rotated token after a 401); no retries inside a call:
        # the elector retries on its own schedule, within the renew deadline.
        return KubeApi(handlers.connection_info(kopf.OperatorSettings()), max_connections=2,
                       timeout=max(1.0, timings.renew_deadline / 2), retries=0)

    elector = LeaderElector(lease_api, namespace=namespace, name=args.leader_election_id,
                            identity=default_identity(), timings=timings)
    standby_probe = await _serve_standby_liveness(args.liveness, elector) if args.liveness else None
    loop = asyncio.get_running_loop()
    acquiring = asyncio.create_task(elector.acquire(), name="respool-lease-acquire")
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, acquiring.cancel)
    try:
        await acquiring
    except asyncio.CancelledError:
        logger.info("leader election: standby %s stopped before it led", elector.identity)
        await elector.close()
        return 0
    finally:
        # kopf installs its own handlers for a graceful stop of the controller.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if standby_probe is not None:
            # Free the liveness port for kopf's own probe endpoint.
            await standby_probe.cleanup()
    elector.start_renewing()
    stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
    operator = asyncio.create_task(kopf.operator(
        standalone=True, liveness_endpoint=args.liveness, stop_flag=stop_flag,
        ready_flag=ready_flag, **scope), name="respool-operator")

    def hard_stop() -> None:
        # The controller did not stop in time: some task may still write, so the Lease is not
        # released (it expires; a standby takes over after the lease duration) - exit now.
        if not operator.done():
            logger.error("the operator did not stop within %ds of the signal; exiting without "
                         "releasing lease %s", SHUTDOWN_GRACE_SECONDS, elector.where)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(1)

    def on_signal(signum: signal.Signals) -> None:
        if stop_flag.is_set():
            return
        logger.info("signal %s: stopping the controller, then releasing lease %s",
                    signum.name, elector.where)
        stop_flag.set()
        loop.call_later(SHUTDOWN_GRACE_SECONDS, hard_stop)

    async def bound_the_shutdown() -> None:
        # kopf installs its own SIGINT/SIGTERM handlers when it starts (a graceful stop, but
        # unbounded); once it runs, ours replace them: the same graceful stop, with a deadline.
        await ready_flag.wait()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)

    signals = asyncio.create_task(bound_the_shutdown(), name="respool-signals")
    try:
        await operator
    finally:
        signals.cancel()
        # kopf has stopped the controller (no write is in flight any more): hand over now.
        await elector.release()
        await elector.close()
    return 0


async def _serve_standby_liveness(endpoint: str, elector: LeaderElector) -> web.AppRunner:
    """While standing by, the liveness endpoint answers 200 (the process is healthy, just not
    leading), with who holds the Lease; kopf serves it once this replica leads."""
    from aiohttp import web

    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise SystemExit(f"respool run: --liveness {endpoint!r}: only http:// is supported")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "lease": elector.where,
                                  "holder": elector.holder(), "identity": elector.identity})

    app = web.Application()
    app.add_routes([web.get(parts.path or "/", health)])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 80).start()
    return runner

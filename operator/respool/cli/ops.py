"""`respool get|describe|reserve|release|free`: the users' view of pools and reservations.

Also reachable as ``kubectl respool ...`` (the `kubectl-respool` entry point). Tables go to
stdout; progress and errors to stderr, so the output can be piped. Every command honours
``--kubeconfig``/``$KUBECONFIG``, ``--context`` and ``-n``/``--namespace``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import urllib3
import yaml

from respool.api import format_duration, format_time, parse_time
from respool.client import availability
from respool.client.errors import (
    AccessDenied,
    InvalidConfigRequest,
    ReservationNotFound,
    ReservationTimeout,
    RespoolError,
)
from respool.client.kube import KubeAPI, Object, condition
from respool.client.native import RespoolClient, epoch, seconds
from respool.client.objects import Reservation
from respool.client.timeline import Booking, Maintenance, render_timeline, span_text
from respool.controller.lifecycle import SpecError
from respool.pool import Hostlist, IDset, InfeasibleRequest

POOL_WORDS = ("pools", "pool", "rpool", "resourcepools", "resourcepool")
RESERVATION_WORDS = ("reservations", "reservation", "rsv", "resourcereservations", "resourcereservation")
HELD_PHASES = ("Active", "Scheduled")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `get`, `describe`, `reserve` and `release` to the `respool` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    common.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="SECONDS",
        help="limit for each API call (default 30)",
    )

    get = sub.add_parser("get", parents=[common], help="list pools or reservations")
    get.add_argument("kind", metavar="pools|reservations", help="what to list (also pool, rpool, rsv)")
    get.add_argument("name", nargs="?", help="only this one")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="reservations in every namespace")
    get.add_argument("--pool", help="only reservations on this pool")
    get.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml", "name"), default="table")
    get.set_defaults(handler=_guarded(_get))

    describe = sub.add_parser(
        "describe", parents=[common],
        help="a pool's utilization and booking timeline, or a reservation's state",
    )
    describe.add_argument("kind", metavar="pool|reservation")
    describe.add_argument("name")
    describe.add_argument("--hours", type=float, default=8.0, help="timeline span (default 8)")
    describe.add_argument("--width", type=int, default=0, help="timeline columns (default: fit the terminal)")
    describe.add_argument("--utc", action="store_true", help="show times in UTC")
    describe.set_defaults(handler=_guarded(_describe))

    reserve = sub.add_parser("reserve", parents=[common], help="create a reservation on a pool")
    reserve.add_argument("pool")
    reserve.add_argument("--nodes", type=int, default=None, help="number of nodes (default 1 unless --slots)")
    reserve.add_argument("--slots", type=int, help="slots (per node when --nodes is given)")
    reserve.add_argument("--cores-per-slot", type=int)
    reserve.add_argument("--gpus-per-slot", type=int)
    reserve.add_argument("--exclusive", action="store_true", help="whole nodes (like flux run --exclusive)")
    reserve.add_argument(
        "--shared", action="store_true",
        help="mode shared: other shared reservations may use the same resources at the same time",
    )
    reserve.add_argument("--duration", default="1h", help="how long, e.g. 90m, 1h30m (default 1h)")
    reserve.add_argument("--start", help="RFC 3339 start time (default now)")
    reserve.add_argument("--name", help="object name (default: generated from the pool)")
    reserve.add_argument(
        "--no-next-available", dest="next_available", action="store_false",
        help="only the window asked for; do not book the earliest later one",
    )
    reserve.add_argument("--max-wait", help="give up if not granted within this (e.g. 30m)")
    reserve.add_argument("--manual-claim", action="store_true", help="claimPolicy Manual")
    reserve.add_argument("--wait", action="store_true", help="wait until granted, showing progress")
    reserve.add_argument(
        "--timeout", default="10m",
        help="with --wait: give up (and release) after this long (default 10m)",
    )
    reserve.add_argument("-o", "--output", choices=("text", "json", "yaml", "name"), default="text")
    reserve.set_defaults(handler=_guarded(_reserve))

    free = sub.add_parser(
        "free", parents=[common],
        help="when a request would fit a pool, without reserving anything",
        description="When would this request fit POOL: is the window free now, the earliest "
        "window of that length, the longest window from the start, and what is free over "
        "time. Computed from the pool and its reservations' statuses; nothing is created. "
        "--nodes N asks for N nodes with --cores/--gpus on each; without it, one slot of "
        "--cores cores and --gpus GPUs on one node. Needs read access to the pool and to "
        "reservations in every namespace.",
    )
    free.add_argument("pool")
    free.add_argument("--nodes", type=int, help="number of nodes (default: any one node)")
    free.add_argument("--cores", type=int, default=1, help="cores (per node with --nodes; default 1)")
    free.add_argument("--gpus", type=int, default=0, help="GPUs (per node with --nodes; default 0)")
    free.add_argument("--duration", required=True, help="window length, e.g. 90m, 1h30m")
    free.add_argument("--start", help="RFC 3339 start time (default now)")
    free.add_argument("--shared", action="store_true", help="mode shared")
    free.add_argument("--utc", action="store_true", help="show times in UTC")
    free.add_argument("-o", "--output", choices=("text", "json"), default="text")
    free.set_defaults(handler=_guarded(_free))

    release = sub.add_parser("release", parents=[common], help="release (delete) reservations")
    release.add_argument("names", nargs="+", metavar="NAME", help="reservation name or ID")
    release.set_defaults(handler=_guarded(_release))


# -- plumbing ---------------------------------------------------------------------------------


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a handler; client errors become one clear line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            with warnings.catch_warnings():
                # A kubeconfig with insecure-skip-tls-verify is the user's explicit choice;
                # like kubectl, do not nag about it on every request.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return handler(args)
        except RespoolError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _api(args: argparse.Namespace) -> KubeAPI:
    return KubeAPI(args.kubeconfig, args.context, request_timeout=args.request_timeout)


def _kind(word: str) -> str:
    lowered = word.lower().split(".", 1)[0]
    if lowered in POOL_WORDS:
        return "pool"
    if lowered in RESERVATION_WORDS:
        return "reservation"
    raise InvalidConfigRequest(f"unknown kind {word!r}: use 'pools' or 'reservations'")


def age(created: str | None, now: float) -> str:
    """kubectl-style age: 45s, 12m, 5h, 3d."""
    if not created:
        return "<unknown>"
    elapsed = max(0, int(now - parse_time(created)))
    if elapsed < 120:
        return f"{elapsed}s"
    if elapsed < 3600 * 2:
        return f"{elapsed // 60}m"
    if elapsed < 86400 * 2:
        return f"{elapsed // 3600}h"
    return f"{elapsed // 86400}d"


def when(epoch_time: float | None, now: float, utc: bool = False) -> str:
    """A compact time: ``HH:MM`` today, ``Mon DD HH:MM`` otherwise."""
    if epoch_time is None:
        return "<none>"
    moment = time.gmtime(epoch_time) if utc else time.localtime(epoch_time)
    today = time.gmtime(now) if utc else time.localtime(now)
    if moment[:3] == today[:3]:
        return time.strftime("%H:%M", moment)
    return time.strftime("%b %d %H:%M", moment)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns like kubectl's: left-aligned, three spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [list(headers), *rows]]
    return "\n".join(lines)


def _dump(objects: list[Object], single: bool, output: str) -> str:
    for obj in objects:
        obj.get("metadata", {}).pop("managedFields", None)
    document: Any = objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects}
    if output == "json":
        return json.dumps(document, indent=2)
    return yaml.safe_dump(document, sort_keys=False).rstrip()


# -- get ----------------------------------------------------------------------------------


def _pool_row(pool: Object, now: float, wide: bool) -> list[str]:
    status = pool.get("status") or {}
    capacity = status.get("capacity") or {}

    def free(kind: str) -> str:
        found = capacity.get(kind) or {}
        return f"{found.get('free', 0)}/{found.get('total', 0)}" if found else "<unknown>"

    ready = condition(pool, "Ready")
    row = [
        pool["metadata"]["name"],
        str((capacity.get("node") or {}).get("total", len(_pool_ranks(pool)))),
        status.get("down") or (pool.get("spec") or {}).get("down") or "<none>",
        status.get("allocated") or "<none>",
        free("core"),
        free("gpu"),
        ready.get("status", "Unknown") if ready else "Unknown",
        age(pool["metadata"].get("creationTimestamp"), now),
    ]
    if wide:
        counts = status.get("reservations") or {}
        row.append(
            ",".join(f"{phase}={counts[phase]}" for phase in ("Active", "Scheduled", "Pending") if counts.get(phase))
            or "<none>"
        )
        row.append(status.get("message") or "")
    return row


def _reservation_row(view: Reservation, now: float, wide: bool, with_namespace: bool) -> list[str]:
    row = [view.namespace] if with_namespace else []
    row += [
        view.name,
        view.pool,
        view.mode,
        view.phase or "<none>",
        view.reservation_id or view.pre_reservation_id or "<none>",
        when(view.start, now),
        when(view.end, now),
        view.nodelist or "<none>",
        age(view.raw.get("metadata", {}).get("creationTimestamp"), now),
    ]
    if wide:
        row += [
            view.reason or "",
            str(view.retry_count),
            str(view.queue_position) if view.queue_position is not None else "",
            when(view.start_no_later_than, now) if view.start_no_later_than is not None else "",
            view.message or "",
        ]
    return row


def _get(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    api = _api(args)
    now = time.time()
    wide = args.output == "wide"
    if kind == "pool":
        objects = [api.get_pool(args.name)] if args.name else api.list_pools()
        if not objects:
            print("No resource pools found.", file=sys.stderr)
            return 0
        if args.output in ("json", "yaml"):
            print(_dump(objects, bool(args.name), args.output))
        elif args.output == "name":
            print("\n".join(f"resourcepool.respool.io/{o['metadata']['name']}" for o in objects))
        else:
            headers = ["NAME", "RANKS", "DOWN", "ALLOCATED", "FREE CORES", "FREE GPUS", "READY", "AGE"]
            if wide:
                headers += ["RESERVATIONS", "MESSAGE"]
            print(table(headers, [_pool_row(o, now, wide) for o in objects]))
        return 0

    namespace = None if args.all_namespaces else (args.namespace or api.default_namespace)
    if args.name:
        if namespace is None:
            raise InvalidConfigRequest("a reservation name needs one namespace, not -A")
        objects = [api.get_reservation(namespace, args.name)]
    else:
        objects = api.list_reservations(namespace)
    if args.pool:
        objects = [o for o in objects if (o.get("spec") or {}).get("pool") == args.pool]
    if not objects:
        where = "any namespace" if namespace is None else f"namespace {namespace!r}"
        print(f"No reservations found in {where}.", file=sys.stderr)
        return 0
    if args.output in ("json", "yaml"):
        print(_dump(objects, bool(args.name), args.output))
        return 0
    views = [Reservation.from_object(o) for o in objects]
    if args.output == "name":
        print("\n".join(f"resourcereservation.respool.io/{v.name}" for v in views))
        return 0
    with_namespace = namespace is None
    headers = (["NAMESPACE"] if with_namespace else []) + [
        "NAME", "POOL", "MODE", "PHASE", "ID", "START", "END", "NODES", "AGE",
    ]
    if wide:
        headers += ["REASON", "RETRIES", "QUEUE", "START-BY", "MESSAGE"]
    print(table(headers, [_reservation_row(v, now, wide, with_namespace) for v in views]))
    return 0


# -- describe -----------------------------------------------------------------------------


def _pool_ranks(pool: Object) -> list[int]:
    execution = ((pool.get("spec") or {}).get("resources") or {}).get("execution") or {}
    ranks: set[int] = set()
    for entry in execution.get("R_lite") or []:
        ranks.update(IDset(str(entry.get("rank", ""))))
    return sorted(ranks)


def _pool_hosts(pool: Object, ranks: Sequence[int]) -> dict[int, str]:
    execution = ((pool.get("spec") or {}).get("resources") or {}).get("execution") or {}
    names = list(Hostlist(list(execution.get("nodelist") or [])))
    if len(names) != len(ranks):
        return {}
    return dict(zip(ranks, names, strict=True))


def _bookings(api: KubeAPI, pool: str, namespace: str) -> tuple[list[Booking], str | None]:
    """Active and Scheduled holds on `pool`, across namespaces if allowed."""
    note = None
    try:
        items = api.list_reservations(None)
    except AccessDenied:
        items = api.list_reservations(namespace)
        note = f"(may not list reservations in all namespaces: showing namespace {namespace!r} only)"
    bookings = []
    for item in items:
        view = Reservation.from_object(item)
        if view.pool != pool or view.phase not in HELD_PHASES or not view.ranks or view.start is None:
            continue
        bookings.append(
            Booking(
                label=f"{view.namespace}/{view.name}",
                ranks=frozenset(IDset(view.ranks)),
                start=view.start,
                end=view.end,
                mode=view.mode,
                phase=view.phase or "",
                nodes=view.nodelist or view.ranks,
            )
        )
    return bookings, note


def _limit_text(limit: dict[str, Any]) -> str:
    """One policy.limits entry on one line, in its own field names."""
    selector = limit.get("namespaceSelector")
    if selector:
        terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
        terms += [f"{e.get('key')} {e.get('operator')} {','.join(e.get('values') or [])}".rstrip()
                  for e in selector.get("matchExpressions") or []]
        parts = ["namespaces " + (", ".join(terms) or "<all>")]
    else:
        parts = ["every namespace"]
    for key in ("maxNodes", "maxCores", "maxGPUs", "maxNodeHoursPerWeek", "maxDuration", "maxAdvance"):
        if key in limit:
            parts.append(f"{key} {limit[key]}")
    for hours in limit.get("allowedHours") or []:
        days = ",".join(hours.get("days") or []) or "every day"
        parts.append(f"allowedHours {hours.get('from')}-{hours.get('to')} {days} {hours.get('timeZone', 'UTC')}")
    return "; ".join(parts)


def _describe_pool(api: KubeAPI, args: argparse.Namespace) -> str:
    pool = api.get_pool(args.name)
    now = time.time()
    spec = pool.get("spec") or {}
    status = pool.get("status") or {}
    ranks = _pool_ranks(pool)
    hosts = _pool_hosts(pool, ranks)
    down = frozenset(IDset(status.get("down") or spec.get("down") or ""))
    ready = condition(pool, "Ready")
    policy = spec.get("policy") or {}
    counts = status.get("reservations") or {}
    lines = [
        f"Name:          {args.name}",
        "Ready:         " + (
            f"{ready.get('status')} ({ready.get('reason') or ''}) {ready.get('message') or ''}".rstrip()
            if ready else "Unknown (the operator has not reported on this pool)"
        ),
        f"Ranks:         {len(ranks)} ({IDset(ranks)}"
        + (f", {Hostlist(list(hosts.values()))}" if hosts else "") + ")",
        f"Down:          {status.get('down') or spec.get('down') or '<none>'}",
        f"Allocated now: {status.get('allocated') or '<none>'}",
        f"Expiration:    {spec.get('expiration') or '<none>'}",
        "Policy:        " + ", ".join(f"{k} {v}" for k, v in policy.items() if k != "limits")
        if policy else "Policy:        <defaults>",
        "Reservations:  " + (", ".join(f"{k} {v}" for k, v in counts.items() if v) or "<none>"),
    ]
    if status.get("message"):
        lines.append(f"Message:       {status['message']}")
    limits = policy.get("limits") or []
    if limits:
        lines += ["", "Limits (per namespace):"]
        lines += [f"  [{index}] {_limit_text(limit)}" for index, limit in enumerate(limits)]
    usage = status.get("usage") or []
    if usage:
        rows = [[str(entry.get("namespace")), str(entry.get("nodes", 0)), str(entry.get("cores", 0)),
                 str(entry.get("gpus", 0)), f"{entry.get('nodeHoursUsed', 0):g}",
                 f"{entry.get('nodeHoursBooked', 0):g}"] for entry in usage]
        lines += ["", "Usage per namespace (held now; node-hours of the last 7 days, and from now on):",
                  table(["NAMESPACE", "NODES", "CORES", "GPUS", "NODE-H USED", "NODE-H BOOKED"], rows)]
    capacity = status.get("capacity") or {}
    if capacity:
        rows = []
        for kind in ("node", "core", "gpu"):
            found = capacity.get(kind)
            if not found:
                continue
            total = int(found.get("total", 0))
            allocated = int(found.get("allocated", 0))
            used = f"{100 * allocated / total:.0f}%" if total else "-"
            rows.append([kind, str(total), str(allocated), str(found.get("down", 0)), str(found.get("free", 0)), used])
        lines += ["", "Utilization now:", table(["RESOURCE", "TOTAL", "ALLOCATED", "DOWN", "FREE", "USED"], rows)]
    bookings, note = _bookings(api, args.name, args.namespace or api.default_namespace)
    width = args.width or max(24, min(96, shutil.get_terminal_size((100, 24)).columns - 24))

    def name_ranks(members: Sequence[int]) -> str:
        if hosts:
            return str(Hostlist([hosts[r] for r in members]))
        return str(IDset(members))

    lines += ["", f"Bookings over the next {span_text(args.hours * 3600)}:"]
    if note:
        lines.append(note)
    lines += render_timeline(
        ranks, bookings, now=now, hours=args.hours, width=width, down=down,
        name_ranks=name_ranks, utc=args.utc, maintenance=_maintenance(status),
    )
    return "\n".join(lines)


def _maintenance(status: dict[str, Any]) -> list[Maintenance]:
    """The pool's maintenance windows as the operator applies them (status.maintenance: the
    ranks resolved from a hostlist, the end from a duration)."""
    windows = []
    for item in status.get("maintenance") or []:
        try:
            windows.append(Maintenance(
                name=str(item.get("name") or ""),
                ranks=frozenset(IDset(str(item.get("ranks") or ""))),
                start=parse_time(str(item["start"])), end=parse_time(str(item["end"])),
                mode=str(item.get("mode") or "Drain"), reason=str(item.get("reason") or "")))
        except (KeyError, ValueError):
            continue  # not written by this operator version: nothing to draw
    return windows


def _describe_reservation(api: KubeAPI, args: argparse.Namespace) -> str:
    namespace = args.namespace or api.default_namespace
    found = api.find_reservation(namespace, args.name)
    if found is None:
        raise ReservationNotFound(f"no reservation {args.name!r} in namespace {namespace!r}")
    view = Reservation.from_object(found)
    spec = found.get("spec") or {}
    status = found.get("status") or {}
    now = time.time()
    available = status.get("nextAvailable") or {}
    lines = [
        f"Name:            {view.name}",
        f"Namespace:       {view.namespace}",
        f"Pool:            {view.pool}",
        f"Mode:            {view.mode}",
        f"Request:         {json.dumps(spec.get('request') or spec.get('resources'))}",
        f"Phase:           {view.describe_state()}",
        f"Pre-reservation: {view.pre_reservation_id or '<none>'}"
        + (f" (claim by {when(view.pre_reservation_expires, now, args.utc)})" if view.pre_reservation_expires else ""),
        f"Reservation ID:  {view.reservation_id or '<none>'}",
        f"Window:          {when(view.start, now, args.utc)} - {when(view.end, now, args.utc)}",
        f"Allocated:       {view.nodelist or '<none>'}" + (f" (ranks {view.ranks})" if view.ranks else ""),
        f"Retries:         {view.retry_count}/{spec.get('maxRetry', 5)}",
        f"Claim policy:    {spec.get('claimPolicy', 'Auto')}" + (", claimed" if spec.get("claimed") else ""),
    ]
    if view.queue_position is not None:
        lines.append(
            f"Queue position:  {view.queue_position} on pool {view.pool}"
            + (f"; starts by {when(view.start_no_later_than, now, args.utc)} if nothing new is booked first"
               if view.start_no_later_than is not None else "; no start the planner can bound")
        )
    consumers = status.get("consumers") or {}
    if consumers.get("count"):
        names = ", ".join(consumers.get("pods") or [])
        more = consumers["count"] - len(consumers.get("pods") or [])
        lines.append(f"Consumers:       {consumers['count']} Pods ({consumers.get('running', 0)} "
                     f"running): {names}" + (f" and {more} more" if more > 0 else ""))
    elif consumers.get("idleSince"):
        lines.append(f"Consumers:       none since {consumers['idleSince']}"
                     + (f"; released at idleSince + idleTimeout ({spec['idleTimeout']})"
                        if spec.get("idleTimeout") else ""))
    if spec.get("onEnd") == "Evict":
        lines.append("On end:          Evict (its Pods are evicted after the pool's "
                     "policy.evictionGracePeriod)")
    if available:
        lines.append(
            f"Next available:  {'yes' if available.get('available') else 'no'}; earliest "
            f"{available.get('availStart', '?')} - {available.get('availEnd', '?')}"
        )
    conditions = status.get("conditions") or []
    if conditions:
        rows = [[c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")] for c in conditions]
        lines += ["", "Conditions:", table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows)]
    return "\n".join(lines)


def _describe(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if args.hours <= 0 or (args.width and args.width < 8):
        raise InvalidConfigRequest("--hours must be > 0 and --width >= 8")
    api = _api(args)
    print(_describe_pool(api, args) if kind == "pool" else _describe_reservation(api, args))
    return 0


# -- reserve / release --------------------------------------------------------------------


def _progress(stream: Any) -> Callable[[Reservation], None]:
    seen: list[tuple[Any, ...]] = []

    def show(view: Reservation) -> None:
        key = (view.phase, view.reason, view.message, view.start, view.pre_reservation_id)
        if seen and seen[-1] == key:
            return
        seen.append(key)
        now = time.time()
        text = f"{time.strftime('%H:%M:%S')} {view.name}: {view.describe_state()}"
        if view.phase == "Scheduled" and view.start is not None:
            text += f"; window starts {when(view.start, now)} (in {span_text(view.start - now)})"
        print(text, file=stream, flush=True)

    return show


def _granted_text(view: Reservation) -> str:
    now = time.time()
    until = f"until {when(view.end, now)} (in {span_text(view.end - now)})" if view.end else "open-ended"
    return (
        f"{view.namespace}/{view.name} {view.phase}: {view.nodelist or '<no nodes>'} "
        f"(ranks {view.ranks or '<none>'}) {until}, ID {view.reservation_id or view.pre_reservation_id}"
    )


def _emit(view: Reservation, output: str) -> None:
    if output == "name":
        print(f"resourcereservation.respool.io/{view.name}")
    elif output in ("json", "yaml"):
        print(_dump([view.raw], True, output))
    else:
        print(_granted_text(view) if view.phase in HELD_PHASES else f"{view.namespace}/{view.name}: {view.describe_state()}")


MAX_WAIT_VERDICT_GRACE = 10.0
"""Seconds `reserve --wait` waits past --timeout for the operator's MaxWaitExceeded verdict."""


def _reserve(args: argparse.Namespace) -> int:
    if args.nodes is not None and args.nodes < 1:
        raise InvalidConfigRequest(f"--nodes must be >= 1, got {args.nodes}")
    timeout = seconds(args.timeout, "--timeout")
    max_wait = args.max_wait if args.max_wait is not None else (args.timeout if args.wait else None)
    client = RespoolClient(
        args.namespace, args.kubeconfig, context=args.context, request_timeout=args.request_timeout
    )
    nodes = args.nodes if args.nodes is not None or args.slots is not None else 1
    created = client.create(
        args.pool,
        nodes=nodes,
        slots=args.slots,
        cores_per_slot=args.cores_per_slot,
        gpus_per_slot=args.gpus_per_slot,
        exclusive=args.exclusive,
        mode="shared" if args.shared else "exclusive",
        duration=args.duration,
        start=None if args.start is None else epoch(args.start, "--start"),
        next_available=args.next_available,
        max_wait=max_wait,
        name=args.name,
        claim_policy="Manual" if args.manual_claim else "Auto",
    )
    if not args.wait:
        if args.output == "text":
            print(f"resourcereservation.respool.io/{created.name} created in namespace {created.namespace}")
        else:
            _emit(created, args.output)
        return 0
    print(f"resourcereservation.respool.io/{created.name} created in namespace {created.namespace}", file=sys.stderr)
    print(
        f"waiting up to {format_duration(timeout)} for {created.name} to become Active ...",
        file=sys.stderr, flush=True,
    )
    # With --timeout as the object's maxWait, the operator enforces it from its first look at
    # the object, a moment after the create: allow its verdict (Failed/MaxWaitExceeded, with
    # its reason and Event) that moment to arrive instead of racing it with a local timeout.
    budget = timeout + MAX_WAIT_VERDICT_GRACE if args.max_wait is None else timeout
    try:
        granted = client.wait(created.name, budget, _progress(sys.stderr))
    except (RespoolError, KeyboardInterrupt) as exc:
        if not isinstance(exc, ReservationNotFound):
            try:
                client.api.delete_reservation(created.namespace, created.name)
                print(f"released {created.namespace}/{created.name}: not waiting any longer",
                      file=sys.stderr)
            except RespoolError as cleanup:  # the original error is the one to report
                print(f"error: could not release {created.namespace}/{created.name} "
                      f"({cleanup}); delete it by hand", file=sys.stderr)
        if isinstance(exc, ReservationTimeout | KeyboardInterrupt):
            raise ReservationTimeout(str(exc) or "interrupted") from exc
        raise
    _emit(granted, args.output)
    return 0


def _release(args: argparse.Namespace) -> int:
    api = _api(args)
    namespace = args.namespace or api.default_namespace
    status = 0
    for name in args.names:
        found = api.find_reservation(namespace, name)
        if found is None or not api.delete_reservation(namespace, found["metadata"]["name"]):
            print(f"error: no reservation {name!r} in namespace {namespace!r}", file=sys.stderr)
            status = 1
            continue
        print(f"resourcereservation.respool.io/{found['metadata']['name']} released")
    return status



def _free(args: argparse.Namespace) -> int:
    for flag, value, least in (("--nodes", args.nodes, 1), ("--cores", args.cores, 1),
                               ("--gpus", args.gpus, 0)):
        if value is not None and value < least:
            raise InvalidConfigRequest(f"{flag} must be >= {least}, got {value}")
    duration = seconds(args.duration, "--duration")
    if duration <= 0:
        raise InvalidConfigRequest(f"--duration must be longer than zero, got {args.duration!r}")
    start = time.time() if args.start is None else epoch(args.start, "--start")
    request: dict[str, Any] = {"slots": 1, "coresPerSlot": args.cores,
                               "gpusPerSlot": args.gpus}
    if args.nodes is not None:
        request["nodes"] = args.nodes
    spec = {"request": request, "mode": "shared" if args.shared else "exclusive"}
    api = _api(args)
    pool = api.get_pool(args.pool)
    reservations = api.list_reservations(None)
    try:
        found = availability.query(pool, reservations, spec, start, duration)
    except SpecError as exc:
        raise InvalidConfigRequest(f"invalid request: {exc}") from None
    except InfeasibleRequest as exc:
        raise InvalidConfigRequest(f"the request can never fit pool {args.pool!r}: {exc}") \
            from None
    if args.output == "json":
        print(json.dumps({
            "pool": found.pool, "start": found.start, "duration": found.duration,
            "available": found.available, "earliestStart": found.earliest_start,
            "earliestEnd": found.earliest_end, "longestFromStart": found.longest_now,
            "maxDuration": found.max_duration,
            "free": [{"time": t, **{kind: counts["free"] for kind, counts in capacity.items()}}
                     for t, capacity in found.free],
        }, indent=2))
        return 0
    show = _time_formatter(args.utc)
    what = (f"{args.nodes} node(s) with " if args.nodes is not None else "one node with ") + (
        f"{args.cores} core(s)" + (f" and {args.gpus} GPU(s)" if args.gpus else ""))
    print(f"pool {found.pool}: {what}, {found.duration:g}s "
          f"({format_duration(found.duration)}){' shared' if args.shared else ''}")
    if found.available:
        print(f"  free at {show(found.start)}: yes")
    elif found.earliest_start is None:
        print(f"  free at {show(found.start)}: no, and no window of that length fits "
              "(ranks it needs are down, or the pool expires first)")
    else:
        print(f"  free at {show(found.start)}: no; earliest {show(found.earliest_start)} to "
              f"{show(found.earliest_end or found.earliest_start)}")
    if found.longest_now is None:
        longest = "unbounded"
    elif found.longest_now <= 0:
        longest = "none (it does not fit at the start)"
    else:
        longest = format_duration(found.longest_now)
    cap = f" (policy.maxDuration {format_duration(found.max_duration)})" \
        if found.max_duration else ""
    print(f"  longest window from {show(found.start)}: {longest}{cap}")
    print("  free over the window asked for:")
    print(f"    {'FROM':<25} {'CORES':>7} {'GPUS':>7} {'NODES':>7}")
    for t, capacity in found.free:
        print(f"    {show(t):<25} {capacity['core']['free']:>7} {capacity['gpu']['free']:>7} "
              f"{capacity['node']['free']:>7}")
    return 0


def _time_formatter(utc: bool) -> Callable[[float], str]:
    def show(t: float) -> str:
        if utc:
            return format_time(t)
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))

    return show

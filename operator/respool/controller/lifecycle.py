"""The reservation life cycle as plain functions: no kopf, no Kubernetes, no I/O.

`decide(reservation, pool, planner, now)` looks at one reservation (its spec and its last
committed status), the pool's context and the pool's `Planner`, changes the planner's booking
for that reservation if the life cycle says so, and returns the status to commit plus the
Events to post. The caller (the pool actor) owns the planner, serializes calls, writes the
status (the commit point) and rolls the booking back if that write fails.

Bookings in the planner are keyed by the reservation's UID; the IDs users see
(`preReservationId`, `reservationId`) are minted here from the UID plus a counter kept in the
reservation's own status, so a restarted operator can never mint a duplicate.

Times are epoch seconds. Windows are whole seconds (`math.floor` of starts, `math.ceil` of
lengths) so that what is written as RFC 3339 and read back after a restart is bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from respool.api import (
    LAST_TIME,
    ConditionType,
    Phase,
    PoolPolicy,
    Reason,
    ResourceReservationSpec,
    format_time,
    parse_duration,
    parse_time,
    parse_time_or_none,
)
from respool.api.models import DEFAULT_PREEMPTION_GRACE_PERIOD, MAX_DISPLACED_BY
from respool.controller import limits as fair_share
from respool.controller import priorities
from respool.controller.booking_seal import BookingSeal
from respool.controller.consumers import ConsumerView, idle_deadline
from respool.controller.consumers import status_field as consumer_status
from respool.controller.selectors import NamespaceLabelsUnknown
from respool.pool import (
    Block,
    Booking,
    Hostlist,
    IDset,
    InfeasibleRequest,
    InsufficientResources,
    Planner,
    jobspec_from_shorthand,
)

ACTIVE = Phase.ACTIVE.value
SCHEDULED = Phase.SCHEDULED.value
PENDING = Phase.PENDING.value
EXPIRED = Phase.EXPIRED.value
FAILED = Phase.FAILED.value
HOLDING_PHASES = frozenset({ACTIVE, SCHEDULED})
#: Ours, on every reservation that holds resources and on every pool.
FINALIZER = "respool.io/finalizer"

DEFAULT_DURATION = 3600.0
DEFAULT_CLAIM_TIMEOUT = 300.0
DEFAULT_MAX_UNCLAIMED_HOLD = 3600.0
DEFAULT_MAX_RETRY = 5
DEFAULT_PREEMPTION_GRACE = parse_duration(DEFAULT_PREEMPTION_GRACE_PERIOD)
# How soon a reservation whose namespace's labels could not be read is judged again (it is
# also judged as soon as the labels arrive).
NAMESPACE_RETRY = 30.0
# No window may end (nor a claim deadline fall) after the last time RFC 3339 can write.
LAST_EPOCH = parse_time(LAST_TIME)
# The largest status the operator writes: etcd stores at most 1.5 MiB per object (spec and
# status together) and answers a larger write with HTTP 500.
MAX_STATUS_BYTES = 524288
EXTENDED = "Extended"  # condition type: did the last change of the window's end succeed
# Condition type: the operator itself moved the end of a granted window earlier (the pool's
# expiration was lowered below it); nothing is ever granted past the pool's expiration.
SHORTENED = "Shortened"


class SpecError(ValueError):
    """The spec cannot be acted on; the message is written to status for a person to read."""


@dataclass(frozen=True)
class EventSpec:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


class Reservation:
    """The actor's record of one ResourceReservation: spec from the watch, status as committed.

    Spec and status are kept as compact JSON text (parsed when a decision needs them): with
    10,000 reservations, nested dicts would be most of the operator's memory. The few fields
    that hot loops read are kept beside them."""

    __slots__ = ("_spec", "_status", "allocated_ranks", "created", "deleting", "failed_attempt",
                 "finalizers", "first_request", "foreign_status", "generation", "has_finalizer",
                 "name", "namespace", "phase", "planned_key", "priority", "resource_version",
                 "uid", "unverified")

    def __init__(self, uid: str, namespace: str, name: str, generation: int,
                 spec: Mapping[str, Any], status: Mapping[str, Any], created: float = 0.0,
                 deleting: bool = False, has_finalizer: bool = False,
                 finalizers: list[str] | None = None, resource_version: str | None = None,
                 planned_key: str | None = None) -> None:
        self.uid = uid
        self.namespace = namespace
        self.name = name
        self.generation = generation
        self.created = created
        self.deleting = deleting
        self.has_finalizer = has_finalizer
        self.finalizers: list[str] = list(finalizers or [])
        self.resource_version = resource_version
        # Fingerprint of the spec the current booking was planned for (memory only). After a
        # restart it is unknown: the held booking is trusted if status.observedGeneration is
        # the object's generation, else the spec changed meanwhile and the window is re-planned.
        self.planned_key = planned_key
        # What the last failed attempt was answered and asked (memory only): whether a window
        # fits at all, the earliest start that fits (whole seconds) and the spec's plan key.
        # An attempt that asks and hears the same again had no other answer and is not
        # counted (see _Decider._counts_as_retry).
        self.failed_attempt: tuple[int, int, str] | None = None
        # The object's status, as last seen, is not the one committed here (someone else
        # wrote it): the next decision is written even if it equals the committed one.
        self.foreign_status = False
        self.spec = spec
        self.status = status

    @classmethod
    def from_object(cls, raw: Mapping[str, Any]) -> Reservation | None:
        """The record of a ResourceReservation as the API server returned it (None without a
        UID); the one way a record is built from an object."""
        metadata = raw.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid:
            return None
        finalizers = list(metadata.get("finalizers") or [])
        return cls(
            uid=uid,
            namespace=metadata.get("namespace") or "",
            name=metadata.get("name") or "",
            generation=int(metadata.get("generation") or 0),
            spec=dict(raw.get("spec") or {}),
            status=dict(raw.get("status") or {}),
            created=parse_time_or_none(metadata.get("creationTimestamp")) or 0.0,
            deleting=bool(metadata.get("deletionTimestamp")),
            has_finalizer=FINALIZER in finalizers,
            finalizers=finalizers,
            resource_version=metadata.get("resourceVersion"),
        )

    @property
    def spec(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self._spec)
        return value

    @spec.setter
    def spec(self, value: Mapping[str, Any]) -> None:
        self._spec = json.dumps(value, separators=(",", ":"))

    @property
    def status(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self._status)
        return value

    @status.setter
    def status(self, value: Mapping[str, Any]) -> None:
        self._status = canonical(value)
        # Why a restore refused the booking this status describes (memory only; restore()
        # sets it): the next decision plans anew. Any other status clears it.
        self.unverified: str | None = None
        phase = value.get("phase")
        self.phase: str | None = phase if isinstance(phase, str) else None
        first = value.get("firstRequestTime")
        self.first_request: str | None = first if isinstance(first, str) else None
        ranks = (value.get("allocated") or {}).get("ranks")
        self.allocated_ranks: str | None = ranks if isinstance(ranks, str) else None
        # The priority it was last decided with (issue 14): waiting ones are tried in its order.
        priority = value.get("priority")
        self.priority: int = priority if isinstance(priority, int) else 0

    @property
    def status_text(self) -> str:
        """The committed status in canonical JSON (compare with `canonical(new_status)`)."""
        return self._status

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def text_size(self) -> int:
        """About how many bytes of JSON its spec and status are."""
        return len(self._spec) + len(self._status)


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys, None values dropped: equal statuses give equal text."""
    if isinstance(value, Mapping):
        # Decisions clear status fields by setting them to None, almost always at the top:
        # dropping those first, most statuses need no walk of the whole tree (it took a tenth
        # of the simulation's time). A "null" left in the text (maybe only inside a string)
        # takes the full walk.
        value = {key: item for key, item in value.items() if item is not None}
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        if "null" not in text:
            return text
    return json.dumps(_without_none(value), separators=(",", ":"), sort_keys=True)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


@dataclass(frozen=True)
class Policy:
    default_duration: float = DEFAULT_DURATION
    max_duration: float | None = None
    claim_timeout: float = DEFAULT_CLAIM_TIMEOUT
    max_unclaimed_hold: float = DEFAULT_MAX_UNCLAIMED_HOLD
    limits: tuple[fair_share.Limit, ...] = ()
    preemption_grace: float = DEFAULT_PREEMPTION_GRACE

    @classmethod
    def from_model(cls, policy: PoolPolicy) -> Policy:
        return cls(
            limits=tuple(fair_share.Limit.from_model(limit, index)
                         for index, limit in enumerate(policy.limits or [])),
            default_duration=parse_duration(policy.default_duration),
            max_duration=parse_duration(policy.max_duration) if policy.max_duration else None,
            claim_timeout=parse_duration(policy.claim_timeout),
            max_unclaimed_hold=(parse_duration(policy.max_unclaimed_hold)
                                if policy.max_unclaimed_hold else DEFAULT_MAX_UNCLAIMED_HOLD),
            preemption_grace=parse_duration(policy.preemption_grace_period
                                            or DEFAULT_PREEMPTION_GRACE_PERIOD),
        )


@dataclass
class PoolContext:
    """What a decision needs to know about the pool besides its planner."""

    name: str
    exists: bool = True
    ready: bool = True  # the pool's spec could be turned into a planner
    problem: str = ""  # why not ready, for a person
    deleting: bool = False  # the pool has a deletionTimestamp: nothing new is booked on it
    policy: Policy = field(default_factory=Policy)
    namespace_allowed: Callable[[str], bool] = lambda _namespace: True
    # policy.limits: a namespace's labels (for the limits' namespaceSelectors), the namespace
    # of a booking (the reservation's UID), and the windows that ended in the last week.
    namespace_labels: Callable[[str], Mapping[str, str]] = lambda _namespace: {}
    namespace_of: Callable[[str], str | None] = lambda _uid: None
    ledger: fair_share.UsageLedger | None = None
    uid: str = ""  # the pool's metadata.uid (status.bookingSeal covers it)
    #: Seals each committed booking (status.bookingSeal); None: no seals are written.
    seal: BookingSeal | None = None
    # Priorities (issue 14): the priority of a reservation naming a PriorityClass (None: the
    # default) in a namespace, and who a booking (UID) is, for messages naming a displacer.
    priority_of: Callable[[str | None, str], priorities.Resolved] = (
        lambda _name, _namespace: priorities.Resolved())
    name_of: Callable[[str], str | None] = lambda _uid: None


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[EventSpec] = field(default_factory=list)
    wake_at: float | None = None  # when this reservation needs looking at again
    granted: bool = False  # became Active in this decision
    # Bookings (UIDs) this decision displaced (issue 14): decided next, so that they say so.
    displaced: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedSpec:
    pool: str
    mode: str
    jobspec: dict[str, Any]
    start: float | None
    end: float | None
    duration: float | None
    next_available: bool
    max_retry: int
    max_wait: float | None
    manual: bool
    claimed: bool
    config: dict[str, Any] | None
    plan_key: str  # what a booking depends on; a change re-plans a Scheduled reservation
    idle_timeout: float | None = None  # spec.idleTimeout (see consumers.py)
    priority_class: str | None = None
    preemptible: bool = False


def parse_spec(spec: Mapping[str, Any]) -> ParsedSpec:
    """Validate a reservation spec with the API model and build its jobspec (SpecError if bad)."""
    try:
        model = ResourceReservationSpec.model_validate(dict(spec))
    except pydantic.ValidationError as exc:
        raise SpecError(_validation_message(exc)) from None
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    constraints = spec.get("constraints")
    if constraints is not None and not isinstance(constraints, dict):
        raise SpecError("spec.constraints must be an object")
    try:
        if model.resources is not None:
            jobspec = _jobspec_from_vertices(spec["resources"], constraints)
        else:
            request = model.effective_request()
            assert request is not None
            jobspec = jobspec_from_shorthand(
                nodes=request.nodes,
                slots=request.slots,
                cores_per_slot=request.cores_per_slot,
                gpus_per_slot=request.gpus_per_slot,
                exclusive=request.exclusive,
                constraints=constraints,
            )
        start = _floor(parse_time(model.start_time)) if model.start_time else None
        end = _floor(parse_time(model.end_time)) if model.end_time else None
        duration = parse_duration(model.duration) if model.duration else None
        max_wait = parse_duration(model.max_wait) if model.max_wait is not None else None
        idle_timeout = (parse_duration(model.idle_timeout) if model.idle_timeout is not None
                        else None)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    mode = str(model.mode.value)
    plan_key = hashlib.blake2b(json.dumps(
        [model.pool, mode, jobspec, start, end, duration], sort_keys=True, default=str
    ).encode(), digest_size=12).hexdigest()
    return ParsedSpec(
        pool=model.pool,
        mode=mode,
        jobspec=jobspec,
        start=start,
        end=end,
        duration=duration,
        next_available=model.next_available,
        max_retry=model.max_retry,
        max_wait=max_wait,
        manual=model.claim_policy.value == "Manual",
        claimed=model.claimed,
        config=model.config,
        plan_key=plan_key,
        idle_timeout=idle_timeout,
        priority_class=model.priority_class_name,
        preemptible=model.preemptible,
    )


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(str(item) for item in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        parts.append(f"spec.{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid spec"


def _jobspec_from_vertices(
    resources: list[dict[str, Any]], constraints: dict[str, Any] | None
) -> dict[str, Any]:
    """A jobspec v1 around user-given resource vertices; the task runs in the first slot."""
    label = _first_slot_label(resources) or "task"
    system: dict[str, Any] = {"duration": 0}
    if constraints:
        system["constraints"] = constraints
    return {
        "version": 1,
        "resources": resources,
        "tasks": [{"command": ["respool"], "slot": label, "count": {"per_slot": 1}}],
        "attributes": {"system": system},
    }


def _first_slot_label(vertices: Any) -> str | None:
    if not isinstance(vertices, list):
        return None
    for vertex in vertices:
        if not isinstance(vertex, dict):
            continue
        if vertex.get("type") == "slot":
            label = vertex.get("label")
            return str(label) if label else "task"
        found = _first_slot_label(vertex.get("with"))
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Small helpers


def _floor(t: float) -> float:
    return float(math.floor(t))


def _ceil(t: float) -> float:
    return float(math.ceil(t))


def _fmt(t: float | None) -> str | None:
    return None if t is None else format_time(t)


def _id_suffix(stem: str, value: Any) -> int:
    if isinstance(value, str) and value.startswith(stem + "-"):
        suffix = value[len(stem) + 1 :]
        if suffix.isdigit():
            return int(suffix)
    return 0


def mint_id(pool: str, uid: str, status: Mapping[str, Any], resource_version: str | None = None,
            floor: int = 0) -> str:
    """`<pool>-<12 hex of the UID>-<n>`: unique across objects (the UID) and never reused by
    one object, also across restarts and after IDs were cleared from its status.

    n is the object's resourceVersion as last seen (etcd revisions only grow, and the write
    committing an ID always yields a larger one), or one more than any ID still in its status
    when the resourceVersion is unknown. An ID minted but never committed is never seen, so
    minting it again is harmless."""
    stem = f"{pool}-{uid.replace('-', '')[:12]}"
    highest = max(floor, *(_id_suffix(stem, status.get(key))
                           for key in ("preReservationId", "reservationId")))
    version = int(resource_version) if resource_version and resource_version.isdigit() else 0
    return f"{stem}-{max(highest + 1, version)}"


def ranks_of(R: Mapping[str, Any]) -> IDset:
    ranks = IDset()
    for entry in (R.get("execution") or {}).get("R_lite") or []:
        ranks = ranks | IDset(str(entry.get("rank", "")))
    return ranks


def allocation_status(booking: Booking) -> dict[str, Any]:
    R = booking.R.to_dict()
    nodelist = (R.get("execution") or {}).get("nodelist") or []
    hosts = Hostlist(",".join(nodelist)).encode() if nodelist else None
    return {
        "ranks": str(ranks_of(R)),
        "nodelist": hosts,
        "summary": booking.R.dumps(),
        "R": R,
        # What a restore needs besides R and the window: the spec's mode may be edited while
        # the operator is away, and a shared hold restored as exclusive would evict its
        # overlapping shared neighbour (review C9).
        "mode": booking.mode,
    }


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: float,
) -> None:
    """Set one kstatus-style condition in place, keeping lastTransitionTime if unchanged."""
    value = "True" if status else "False"
    for condition in conditions:
        if condition.get("type") == type_:
            if condition.get("status") != value:
                condition["lastTransitionTime"] = format_time(now)
            condition.update(
                status=value, reason=reason, message=message[:1024], observedGeneration=generation
            )
            return
    conditions.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:1024],
            "observedGeneration": generation,
            "lastTransitionTime": format_time(now),
        }
    )


def drop_condition(conditions: list[dict[str, Any]], type_: str) -> None:
    conditions[:] = [c for c in conditions if c.get("type") != type_]


def _condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def window_length(spec: ParsedSpec, anchor: float, policy: Policy, now: float) -> float:
    """The window length a spec asks for, in whole seconds (a grant always holds this length);
    `anchor` is where the window is wanted from (spec.startTime, else the first request).
    SpecError when the pool's policy or the calendar forbids it."""
    if spec.end is not None:
        length = spec.end - anchor
        if length <= 0:
            raise SpecError(f"spec.endTime {format_time(spec.end)} is already in the past")
    elif spec.duration is not None:
        length = spec.duration
    else:
        length = policy.default_duration
    length = max(1.0, _ceil(length))
    limit = policy.max_duration
    if limit is not None and length > limit:
        raise SpecError(
            f"the window asked for ({_human(length)}) is longer than the pool's "
            f"policy.maxDuration ({_human(limit)})"
        )
    start = max(anchor, _floor(now))
    if start > latest_start(length):
        raise SpecError(
            f"the window asked for ({_human(length)} from {format_time(start)}) would "
            f"end after {LAST_TIME}, the last time RFC 3339 can write"
        )
    return length


def latest_start(length: float) -> float:
    """The latest start of a window of this length that can still be written down."""
    return LAST_EPOCH - length


def max_wait_deadline(spec: ParsedSpec, first_request: float) -> float | None:
    """When a reservation not granted nor booked by then fails (spec.maxWait), if ever."""
    if spec.max_wait is None:
        return None
    return max(first_request, spec.start or 0.0) + spec.max_wait


# ---------------------------------------------------------------------------------------------
# The decision


class _Decider:
    """One decision for one reservation; builds the new status step by step."""

    def __init__(
        self, rsv: Reservation, pool: PoolContext, planner: Planner | None, now: float,
        consumers: ConsumerView | None = None,
    ) -> None:
        self.rsv = rsv
        self.consumers = consumers
        self.pool = pool
        self.planner = planner
        self.now = now
        old = rsv.status
        self.old = old
        self.old_phase = rsv.phase
        self.status: dict[str, Any] = {
            key: value for key, value in old.items() if key != "conditions"
        }
        self.conditions: list[dict[str, Any]] = [dict(c) for c in old.get("conditions") or []]
        self.events: list[EventSpec] = []
        self.wake_at: float | None = None
        self.granted = False
        self.status["observedGeneration"] = rsv.generation
        if not self.status.get("firstRequestTime"):
            self.status["firstRequestTime"] = format_time(now)
        self.status.setdefault("retryCount", 0)
        self._minted = 0  # highest suffix minted in this decision (IDs may be cleared meanwhile)
        self.displaced: list[str] = []
        self.resolved = priorities.Resolved()

    def mint(self) -> str:
        stem = f"{self.pool.name}-{self.rsv.uid.replace('-', '')[:12]}"
        floor = max(self._minted, *(_id_suffix(stem, self.old.get(key))
                                    for key in ("preReservationId", "reservationId")))
        minted = mint_id(self.pool.name, self.rsv.uid, self.status, self.rsv.resource_version,
                         floor)
        self._minted = _id_suffix(stem, minted)
        return minted

    # -- results -----------------------------------------------------------------------------

    def outcome(self) -> Outcome:
        self.status["conditions"] = self.conditions
        displacers = self.planner.displaced_by(self.rsv.uid) if self.planner is not None else None
        if displacers:
            # Kept in status so a restart still knows it must never displace them (no cascades).
            self.status["displacedBy"] = sorted(displacers)[:MAX_DISPLACED_BY]
        if self.consumers is not None:
            active = self.status.get("phase") == ACTIVE
            idle_timeout = _idle_timeout(self.rsv.spec) if active else None
            active_since = parse_time_or_none(self.status.get("startTime"))
            self.status["consumers"] = consumer_status(
                self.consumers, self.old.get("consumers"), active=active,
                idle_timeout=idle_timeout, active_since=active_since)
            if active and active_since is not None:
                # Also right after the grant: the idle clock runs from the window's start.
                self.wake(idle_deadline(idle_timeout, self.consumers, active_since))
        return Outcome(self.status, self.events, self.wake_at, self.granted, self.displaced)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(EventSpec("Warning" if warning else "Normal", reason, message))

    def wake(self, t: float | None) -> None:
        if t is not None and (self.wake_at is None or t < self.wake_at):
            self.wake_at = t

    @property
    def first_request(self) -> float:
        value = parse_time_or_none(self.status.get("firstRequestTime"))
        return value if value is not None else self.now

    def _booking(self) -> Booking | None:
        return self.planner.get(self.rsv.uid) if self.planner is not None else None

    def _release(self) -> None:
        if self.planner is not None:
            released = self.planner.release(self.rsv.uid)
            if released is not None and self.pool.ledger is not None:
                # What of it was held still counts toward maxNodeHoursPerWeek for a week.
                self.pool.ledger.record(self.rsv.uid, self.rsv.namespace, released, self.now)

    def _clear_hold(self) -> None:
        self.status["preReservationId"] = None
        self.status["preReservationExpires"] = None
        self.status["allocated"] = None

    def _kstatus(self, ready: bool, reconciling: tuple[str, str] | None,
                 stalled: tuple[str, str] | None, ready_reason: str, message: str) -> None:
        gen, now = self.rsv.generation, self.now
        set_condition(self.conditions, ConditionType.READY.value, ready, ready_reason, message,
                      gen, now)
        # The message lives in status.message and on the conditions that are True; a False
        # Reconciling/Stalled carries only its reason (status stays small: it is written often).
        if reconciling:
            set_condition(self.conditions, ConditionType.RECONCILING.value, True, reconciling[0],
                          reconciling[1], gen, now)
        else:
            set_condition(self.conditions, ConditionType.RECONCILING.value, False, ready_reason,
                          "", gen, now)
        if stalled:
            set_condition(self.conditions, ConditionType.STALLED.value, True, stalled[0],
                          stalled[1], gen, now)
        else:
            set_condition(self.conditions, ConditionType.STALLED.value, False, ready_reason,
                          "", gen, now)
        self.status["message"] = message

    def _scheduled_condition(self, on: bool, reason: str, message: str) -> None:
        set_condition(self.conditions, ConditionType.SCHEDULED.value, on, reason, message,
                      self.rsv.generation, self.now)

    # -- terminal states ---------------------------------------------------------------------

    def fail(self, reason: str, message: str) -> Outcome:
        self._release()
        self._clear_hold()
        self.status["phase"] = FAILED
        self._scheduled_condition(False, reason, message)
        drop_condition(self.conditions, ConditionType.RESOURCES_DEGRADED.value)
        self._kstatus(False, None, (reason, message), reason, message)
        if self.old_phase != FAILED or _reason(self.old, "Stalled") != reason:
            self.event(reason, message, warning=True)
        return self.outcome()

    def expire(self, reason: str = Reason.EXPIRED.value, message: str | None = None) -> Outcome:
        self._release()
        self._clear_hold()
        self.status["phase"] = EXPIRED
        if message is None:
            message = (f"window ended at {self.status.get('endTime')}; resources returned to "
                       "the pool")
        self._scheduled_condition(False, reason, message)
        drop_condition(self.conditions, ConditionType.RESOURCES_DEGRADED.value)
        self._kstatus(False, None, None, reason, message)
        self.event(reason, message)
        return self.outcome()

    def _idle(self, spec: ParsedSpec, booking: Booking) -> Outcome | None:
        """spec.idleTimeout: released early once no consumer Pod has been seen for that long
        (consumers.py says when the idle clock starts); None while it is not due."""
        active_since = parse_time_or_none(self.status.get("startTime")) or booking.start
        deadline = idle_deadline(spec.idle_timeout, self.consumers, active_since)
        if deadline is None:
            return None
        if self.now < deadline:
            return None  # outcome() wakes at the deadline
        since = deadline - (spec.idle_timeout or 0.0)
        self.status["endTime"] = format_time(max(booking.start + 1, self.now))
        return self.expire(Reason.IDLE.value,
                           f"no consumer Pod since {format_time(since)} (spec.idleTimeout "
                           f"{_human(spec.idle_timeout or 0.0)}): released early; resources "
                           "returned to the pool")

    def wait(self, reason: str, message: str, stalled: bool = False,
             next_available: dict[str, Any] | None = None) -> Outcome:
        """Pending: nothing held now; retried when capacity changes (or the pool appears)."""
        self._release()
        self._clear_hold()
        self.status["phase"] = PENDING
        if next_available is not None:
            self.status["nextAvailable"] = next_available
        self._scheduled_condition(False, reason, message)
        if stalled:
            self._kstatus(False, None, (reason, message), reason, message)
        else:
            self._kstatus(False, (reason, message), None, reason, message)
        previous = _reason(self.old, "Stalled" if stalled else "Reconciling")
        if self.old_phase != PENDING or previous != reason:
            self.event(reason, message, warning=stalled)
        return self.outcome()

    # -- the main entry ----------------------------------------------------------------------

    def decide(self) -> Outcome:
        rsv, phase = self.rsv, self.old_phase
        generation_changed = self.old.get("observedGeneration") != rsv.generation
        if phase == EXPIRED:
            self._release()
            return self.outcome()
        if phase == FAILED:
            if not generation_changed:
                self._release()
                return self.outcome()
            # A person changed a failed reservation's spec: start over.
            self.status["retryCount"] = 0
            self.status["unclaimedSince"] = None
            self.status["firstRequestTime"] = format_time(self.now)
            self.old_phase = None
        replanning = False
        if rsv.unverified is not None and phase in HOLDING_PHASES and self._booking() is None:
            # The restore did not re-register the booking this status describes (its
            # bookingSeal does not check out): nothing is held. Planned anew like a reservation
            # never decided, and not counted as a retry: the user did nothing wrong.
            self.event(Reason.BOOKING_UNVERIFIED.value,
                       f"the {phase} booking in status was not restored after the operator "
                       f"restarted: {rsv.unverified}; planning anew (not counted as a retry)",
                       warning=True)
            self._clear_hold()
            for key in ("reservationId", "startTime", "endTime", "config", "unclaimedSince",
                        "bookingSeal"):
                self.status[key] = None
            self.old_phase = phase = None
            replanning = True
        if (phase in HOLDING_PHASES and self.planner is None and self.pool.exists
                and not self.pool.ready):
            # The pool's spec cannot be used and there is no planner to judge the grant with
            # (the operator restarted meanwhile). What was granted stays as committed - not
            # lost, not granted again - until the pool is usable (review C3); the pool's own
            # status says what is wrong.
            return Outcome(dict(self.old))
        if phase != ACTIVE:
            # Cheap checks before the spec is parsed (parsing is the costly part).
            gated = self._pool_gate()
            if gated is not None:
                return gated
        try:
            spec = parse_spec(rsv.spec)
        except SpecError as exc:
            if phase == ACTIVE and self._booking() is not None:
                # What was granted stays granted; the change cannot be applied.
                message = f"spec change ignored: {exc}"
                set_condition(self.conditions, EXTENDED, False, Reason.INVALID_SPEC.value,
                              message, rsv.generation, self.now)
                self.event(Reason.INVALID_SPEC.value, message, warning=True)
                return self.outcome()
            return self.fail(Reason.INVALID_SPEC.value, f"invalid spec: {exc}")
        if phase == ACTIVE:
            # Granted already: pool membership, selectors and feasibility were judged then.
            booking = self._booking()
            if booking is None:
                return self.fail(Reason.RESOURCES_LOST.value,
                                 "the resources granted are no longer part of the pool")
            try:
                length: float | None = self._length(spec)
            except SpecError as exc:
                length = None
                if generation_changed:
                    message = f"cannot change the window: {exc}"
                    set_condition(self.conditions, EXTENDED, False,
                                  Reason.EXTENSION_DENIED.value, message, rsv.generation,
                                  self.now)
                    self.event(Reason.EXTENSION_DENIED.value, message, warning=True)
            self._resolve_priority(spec)
            return self._active(spec, booking, length, generation_changed)
        if not self.pool.ready or self.planner is None:
            # maxWait runs while the pool is unusable, as it does while the pool is missing
            # (_pool_gate): once it has passed the reservation fails. Waking at a deadline
            # already passed would make it due again at once, at the same instant - a busy
            # loop that found by the simulation (seed 324) while a restarted operator had no
            # planner for a pool whose spec it could not use.
            if self._max_wait_passed(spec):
                return self._max_wait_failure(spec)
            self.wake(self._max_wait_deadline(spec))
            return self.wait(Reason.POOL_NOT_FOUND.value,
                             f"ResourcePool {spec.pool!r} is not usable: {self.pool.problem}",
                             stalled=True)
        planner = self.planner
        try:
            request = planner.parse(spec.jobspec)
            planner.check_feasibility(request)
        except InfeasibleRequest as exc:
            return self.fail(Reason.INFEASIBLE.value,
                             f"the request can never fit ResourcePool {spec.pool!r}: {exc}")
        except (ValueError, TypeError, KeyError, OSError) as exc:
            return self.fail(Reason.INVALID_SPEC.value, f"invalid request: {exc}")
        try:
            length = self._length(spec)
        except SpecError as exc:
            return self.fail(Reason.INVALID_SPEC.value, str(exc))

        resolved = self._resolve_priority(spec)
        booking = planner.get(rsv.uid)
        if resolved.missing and booking is None:
            # Kubernetes refuses a Pod naming an unknown PriorityClass; a reservation and its
            # class are often applied together, so it waits for the class instead.
            self.wake(self._max_wait_deadline(spec))
            if self._max_wait_passed(spec):
                return self._max_wait_failure(spec)
            return self.wait(Reason.INVALID_SPEC.value, f"{resolved.note}; waiting for it",
                             stalled=True)
        if phase == SCHEDULED and booking is not None:
            return self._scheduled(spec, request, booking, length, generation_changed)
        if phase == SCHEDULED:
            displacers = planner.displaced_by(rsv.uid)
            if displacers:
                # Taken by a reservation of higher priority (issue 14): say by whom.
                who = self._names(displacers)
                message = (f"the window held was taken by {who} (higher priority); planning "
                           "a new one")
                set_condition(self.conditions, ConditionType.REPLANNED.value, True,
                              Reason.PREEMPTED.value, message, rsv.generation, self.now)
                self.event(Reason.REPLANNED.value, message, True)
                return self._plan(spec, request, length, count_retry=False)
            # The held window vanished (an administrator removed its ranks, or it conflicted
            # on restore): plan anew, without counting a retry against the user.
            self.event(Reason.REPLANNED.value,
                       "the window held is no longer available; planning a new one", True)
            return self._plan(spec, request, length, count_retry=False)
        return self._plan(spec, request, length, count_retry=not replanning)

    # -- priorities, preemption, maintenance (issue 14) --------------------------------------

    def _resolve_priority(self, spec: ParsedSpec) -> priorities.Resolved:
        """The priority this reservation is decided with, written to status.priority and kept
        on its booking (who may displace it depends on it)."""
        resolved = self.pool.priority_of(spec.priority_class, self.rsv.namespace)
        self.resolved = resolved
        self.status["priority"] = resolved.value
        booking = self._booking()
        if (booking is not None and self.planner is not None
                and (booking.priority, booking.preemptible)
                != (resolved.value, spec.preemptible)):
            self.planner.set_priority(self.rsv.uid, resolved.value, spec.preemptible)
        return resolved

    def _names(self, uids: Iterable[str]) -> str:
        return ", ".join(sorted(self.pool.name_of(uid) or uid for uid in uids))

    def _preempt(self, spec: ParsedSpec, request: Any, start: float,
                 length: float) -> Booking | None:
        """Take the window asked for from bookings of lower priority, if that is what makes it
        fit: Scheduled ones are released (their reservations are planned anew, Replanned),
        Active preemptible ones are cut back to end when the pool's grace period is over, and
        the window then starts there. None (and nothing changed) when it cannot."""
        assert self.planner is not None
        planner, uid, now = self.planner, self.rsv.uid, self.now
        resolved = self.resolved
        lowest = planner.lowest_priority()
        if not resolved.may_preempt or lowest is None or lowest >= resolved.value:
            return None  # nobody it could displace: not worth a plan
        plan = planner.plan_preemption(uid, request, start, start + length, spec.mode,
                                       resolved.value, now)
        if plan is None or not plan.victims:
            return None
        at = start
        if any(victim.start <= now for victim in map(planner.get, plan.victims)
               if victim is not None):
            # Active holders keep their resources for the grace period.
            at = max(start, _ceil(now + self.pool.policy.preemption_grace))
            if at != start:
                if not spec.next_available or at > self._latest_start(length):
                    return None
                deadline = self._max_wait_deadline(spec)
                if deadline is not None and at > deadline:
                    return None
                plan = planner.plan_preemption(uid, request, at, at + length, spec.mode,
                                               resolved.value, now)
                if plan is None or not plan.victims:
                    return None
        saved = [b for b in map(planner.get, plan.victims) if b is not None]
        planner.preempt(uid, plan.victims, at, now)
        try:
            booking = planner.reserve(uid, request, at, at + length, spec.mode, resolved.value,
                                      spec.preemptible)
        except (InsufficientResources, InfeasibleRequest, ValueError):
            self._undo_preemption(saved)  # not expected: the same question was just answered
            return None
        self.displaced = list(plan.victims)
        self.event(Reason.PREEMPTED.value,
                   f"displaced {self._names(plan.victims)} (lower priority) to take the window "
                   f"from {format_time(at)}")
        return booking

    def _undo_preemption(self, saved: list[Booking]) -> None:
        assert self.planner is not None
        self.planner.release(self.rsv.uid)
        for booking in saved:
            if self.planner.get(booking.id) is None:
                self.planner.restore(booking.id, booking.R.to_dict(), booking.start,
                                     booking.end, booking.mode, booking.priority,
                                     booking.preemptible)
            elif self.planner.get(booking.id) != booking:
                self.planner.extend(booking.id, booking.end)
        self.displaced = []

    def _preemption_pending(self, booking: Booking) -> Outcome | None:
        """An Active preemptible holder cut back by a reservation of higher priority: it says
        so at once (PreemptionPending, a Warning Event, the new endTime) and ends
        Failed/Preempted when the grace period is over. None: not preempted, or not yet over."""
        condition = _condition(self.conditions, ConditionType.PREEMPTION_PENDING.value)
        announced = condition is not None and condition.get("status") == "True"
        if not announced:
            assert self.planner is not None
            committed_end = parse_time_or_none(self.status.get("endTime"))
            displacers = self.planner.displaced_by(self.rsv.uid)
            if (not displacers or booking.end is None or committed_end is None
                    or booking.end >= committed_end):
                return None
            message = (f"preempted by {self._names(displacers)} (higher priority): its "
                       f"resources are taken at {format_time(booking.end)}, after the pool's "
                       "policy.preemptionGracePeriod")
            self.status["endTime"] = format_time(booking.end)
            set_condition(self.conditions, ConditionType.PREEMPTION_PENDING.value, True,
                          Reason.PREEMPTED.value, message, self.rsv.generation, self.now)
            self.event(ConditionType.PREEMPTION_PENDING.value, message, warning=True)
            condition = _condition(self.conditions, ConditionType.PREEMPTION_PENDING.value)
        if booking.end is not None and self.now >= booking.end:
            assert condition is not None
            drop_condition(self.conditions, ConditionType.PREEMPTION_PENDING.value)
            return self.fail(Reason.PREEMPTED.value, str(condition.get("message") or
                                                         "preempted"))
        self.wake(booking.end)
        return None

    def _maintenance(self, booking: Booking) -> Outcome | None:
        """An Active holder reaching into a maintenance window ends at its start: Evict cuts
        the window back at once (endTime, condition Shortened), Drain keeps it as it is until
        the maintenance starts (a Warning Event says so now). None: no maintenance in its way,
        or not yet started."""
        assert self.planner is not None
        blocks = self.planner.maintenance_over(self.rsv.uid)
        if not blocks:
            return None
        block = blocks[0]
        label = maintenance_label(block)
        gen, now = self.rsv.generation, self.now
        if block.start <= now:
            self.status["endTime"] = format_time(max(now, booking.start + 1))
            return self.expire(message=f"ended for maintenance {label}: window ended at "
                               f"{self.status['endTime']}; resources returned to the pool")
        shortened = _condition(self.conditions, SHORTENED)
        if block.mode == "Evict":
            message = (f"cut back to end at {format_time(block.start)} for maintenance "
                       f"{label}")
            self.planner.extend(self.rsv.uid, block.start)
            self.status["endTime"] = format_time(block.start)
            set_condition(self.conditions, SHORTENED, True, Reason.MAINTENANCE.value, message,
                          gen, now)
            self.event(Reason.MAINTENANCE.value, message, warning=True)
        elif shortened is None or shortened.get("reason") != Reason.MAINTENANCE.value:
            message = (f"ends at {format_time(block.start)} when maintenance {label} starts "
                       f"(its window asked until {_fmt(booking.end)})")
            set_condition(self.conditions, SHORTENED, True, Reason.MAINTENANCE.value, message,
                          gen, now)
            self.event(Reason.MAINTENANCE.value, message, warning=True)
        self.wake(block.start)
        return None

    def _pool_gate(self) -> Outcome | None:
        """Is there a pool, and does it admit this namespace? None when both hold.

        A namespace the pool does not admit gets exactly the answer a missing pool gets
        (Pending, PoolNotFound, the same message), so nothing about a pool leaks to a
        namespace it does not admit - as a private repository answers 404, not 403. Both wait:
        the pool may be created, the namespace relabelled, the selector edited. A namespace
        whose labels could not be read is not admitted either; it is judged again when they
        arrive (and every NAMESPACE_RETRY seconds), and a window already held is kept
        meanwhile."""
        rsv = self.rsv
        try:
            admitted = self.pool.exists and self.pool.namespace_allowed(rsv.namespace)
        except NamespaceLabelsUnknown:
            admitted = False
            if self.old_phase == SCHEDULED:
                return self._postpone(NAMESPACE_RETRY)
            self.wake(_ceil(self.now) + NAMESPACE_RETRY)
        if admitted:
            return None
        start, max_wait = _raw_start_and_max_wait(rsv.spec)
        if max_wait is not None:
            deadline = max(self.first_request, start or 0.0) + max_wait
            if self.now >= deadline:
                return self.fail(
                    Reason.MAX_WAIT_EXCEEDED.value,
                    f"not granted, nor booked to start, within maxWait ({_human(max_wait)}) of "
                    "the first request")
            self.wake(deadline)
        return self.wait(Reason.POOL_NOT_FOUND.value,
                         f"ResourcePool {self.pool.name!r} was not found for namespace "
                         f"{rsv.namespace!r}: it does not exist, or its namespaceSelector does "
                         "not admit this namespace; waiting", stalled=True)

    def _postpone(self, seconds: float) -> Outcome:
        """Decide nothing now: the status stays as committed (also observedGeneration, so a
        spec edit is still seen as one later) and the reservation is judged again soon."""
        self.status = {key: value for key, value in self.old.items() if key != "conditions"}
        self.conditions = [dict(c) for c in self.old.get("conditions") or []]
        self.events = []
        self.wake(_ceil(self.now) + seconds)
        return self.outcome()

    # -- windows -----------------------------------------------------------------------------

    def _anchor(self, spec: ParsedSpec) -> float:
        return spec.start if spec.start is not None else _floor(self.first_request)

    def _length(self, spec: ParsedSpec) -> float:
        """The window length asked for (whole seconds); a grant always holds this length."""
        return window_length(spec, self._anchor(spec), self.pool.policy, self.now)

    @staticmethod
    def _latest_start(length: float) -> float:
        return latest_start(length)

    def _claim_deadline(self, start: float) -> float:
        return min(start + self.pool.policy.claim_timeout, LAST_EPOCH)

    def _max_wait_deadline(self, spec: ParsedSpec) -> float | None:
        return max_wait_deadline(spec, self.first_request)

    def _max_wait_passed(self, spec: ParsedSpec) -> bool:
        deadline = self._max_wait_deadline(spec)
        return deadline is not None and self.now >= deadline

    def _max_wait_failure(self, spec: ParsedSpec) -> Outcome:
        return self.fail(
            Reason.MAX_WAIT_EXCEEDED.value,
            f"not granted, nor booked to start, within maxWait "
            f"({_human(spec.max_wait or 0)}) of the first request",
        )

    # -- Pending: find a window --------------------------------------------------------------

    def _counts_as_retry(self, spec: ParsedSpec, earliest: float | None) -> bool:
        """Whether this failed attempt is a retry to count (DESIGN §2: retried when capacity
        changes, each failed attempt counts; docs/api.md "Retries"). It counts when it could
        have had another answer for this reservation: what it asks changed (the spec's plan
        key), or the capacity it could use did (the earliest window that fits it moved). Not
        when the same question gets the same answer again: another tenant creating and
        deleting reservations this one could not use, a pool policy or label edit, a config
        edit or an operator restart would otherwise use up maxRetry with nothing retried."""
        seen = (int(earliest is not None), int(earliest or 0), spec.plan_key)
        last, self.rsv.failed_attempt = self.rsv.failed_attempt, seen
        if last is None:
            # First attempt in this process: it counts, unless the reservation was already
            # Pending before (its attempt was counted then, and a restart changes nothing).
            return self.old_phase != PENDING
        return last != seen

    def _plan(self, spec: ParsedSpec, request: Any, length: float, count_retry: bool) -> Outcome:
        assert self.planner is not None
        planner, uid, now = self.planner, self.rsv.uid, self.now
        limits = self._applicable_limits()
        if limits is None:
            # A limit selects namespaces by label and this one's are not known yet: decide
            # nothing (a window held stays held) until they are (or NAMESPACE_RETRY).
            return self._postpone(NAMESPACE_RETRY)
        self._release()
        self._clear_hold()
        if self._max_wait_passed(spec):
            return self._max_wait_failure(spec)
        if self.pool.deleting:
            # Booking on a pool being deleted would keep it alive (its finalizer stays while
            # anything holds resources) and could land after its finalizer is gone.
            self.wake(self._max_wait_deadline(spec))
            return self.wait(Reason.POOL_DELETING.value,
                             f"ResourcePool {spec.pool!r} is being deleted; nothing new is "
                             "booked on it", stalled=True)
        start = max(self._anchor(spec), _floor(now))
        end = start + length
        expiration = planner.expiration
        if expiration and end > expiration:
            return self.fail(
                Reason.POOL_EXPIRED.value,
                f"the window would end at {format_time(end)}, after the pool's expiration "
                f"{format_time(expiration)}",
            )
        if limits:
            # Over a limit whatever it is granted (the least any grant holds, its length):
            # it can never be granted, and waiting for capacity would not change that.
            least = fair_share.Use(start, end, max(request.nnodes, 1),
                                   request.nslots * request.slot_size,
                                   request.nslots * request.gpu_per_slot)
            alone = fair_share.judge_alone(limits, least)
            if alone is not None:
                return self.fail(Reason.QUOTA_EXCEEDED.value,
                                 f"over a limit of pool {spec.pool!r}: {alone.message}")
        deadline = self._max_wait_deadline(spec)
        latest = self._latest_start(length)
        deadline = latest if deadline is None else min(deadline, latest)
        booking: Booking | None = None
        priority, preemptible = self.resolved.value, spec.preemptible
        try:
            booking = planner.reserve(uid, request, start, end, spec.mode, priority, preemptible)
        except InsufficientResources:
            booking = None
        except InfeasibleRequest as exc:
            return self.fail(Reason.INFEASIBLE.value, f"the request can never fit: {exc}")
        available = booking is not None
        in_way: list[Block] = []
        if booking is None:
            in_way = planner.maintenance_in_way(request, start, end, spec.mode)
            if not in_way:
                booking = self._preempt(spec, request, start, length)
                available = booking is not None and booking.start == start
        if booking is None and spec.next_available:
            booking = planner.reserve_earliest(uid, request, length, start, spec.mode,
                                               deadline=deadline, priority=priority,
                                               preemptible=preemptible)
        if booking is not None and limits:
            saved = [b for b in map(planner.get, self.displaced) if b is not None]
            held_back = self._over_limit(spec, booking, limits)
            if held_back is not None:
                if self.displaced:
                    self._undo_preemption(saved)
                    held_back.displaced = []
                return held_back
        if booking is not None:
            self.rsv.planned_key = spec.plan_key
            self.status["nextAvailable"] = {
                "available": available,
                "availStart": format_time(booking.start),
                "availEnd": _fmt(booking.end),
            }
            held = self._hold(spec, booking)
            if in_way and booking.start != start:
                held.status["message"] += (
                    f" (the window asked for is busy: maintenance "
                    f"{', '.join(maintenance_label(block) for block in in_way)})")
            return held
        # Nothing now (nor, with nextAvailable, within maxWait): a failed attempt.
        earliest = planner.earliest(request, length, start, spec.mode, deadline=latest)
        next_available = {
            "available": False,
            "availStart": _fmt(earliest),
            "availEnd": _fmt(None if earliest is None else earliest + length),
        }
        counted = count_retry and self._counts_as_retry(spec, earliest)
        retries = int(self.status.get("retryCount") or 0) + (1 if counted else 0)
        self.status["retryCount"] = retries
        self.status["nextAvailable"] = next_available
        if retries > spec.max_retry:
            return self.fail(
                Reason.RETRY_EXCEEDED.value,
                f"not granted after {retries} attempts (maxRetry {spec.max_retry})",
            )
        if in_way:
            why = "busy: maintenance " + ", ".join(maintenance_label(b) for b in in_way)
            if earliest is not None:
                why += f" (earliest fit {format_time(earliest)})"
            # A maintenance ending frees nothing the actor hears of: try again then.
            self.wake(min(block.end for block in in_way))
        elif earliest is None:
            why = "no window fits while the ranks it needs are down or before the pool expires"
        elif not spec.next_available:
            why = (f"the window asked for is busy (earliest fit {format_time(earliest)}; "
                   "nextAvailable is false)")
        else:
            why = f"earliest fit {format_time(earliest)} starts after maxWait"
        self.wake(deadline)
        return self.wait(Reason.WAITING_FOR_CAPACITY.value,
                         f"waiting for capacity on pool {spec.pool!r}: {why}; "
                         f"attempt {retries} of {spec.max_retry + 1}",
                         next_available=next_available)

    # -- policy.limits (fair share) ----------------------------------------------------------

    def _applicable_limits(self) -> tuple[fair_share.Limit, ...] | None:
        """The pool's limits that select this reservation's namespace; None when one selects
        by label and the namespace's labels are not known yet."""
        limits = self.pool.policy.limits
        if not limits:
            return ()
        try:
            return fair_share.applicable(limits, self.pool.namespace_labels(self.rsv.namespace))
        except NamespaceLabelsUnknown:
            return None

    def _limit_verdict(self, limits: tuple[fair_share.Limit, ...],
                       window: fair_share.Use) -> fair_share.Verdict | None:
        planner = self.planner
        assert planner is not None

        def others() -> list[fair_share.Use]:
            return fair_share.namespace_uses(planner.bookings(), self.pool.namespace_of,
                                             self.pool.ledger, self.rsv.namespace, self.rsv.uid,
                                             self.now)

        return fair_share.judge(limits, window, others, self.now)

    def _over_limit(self, spec: ParsedSpec, booking: Booking,
                    limits: tuple[fair_share.Limit, ...]) -> Outcome | None:
        """The window just booked would take the namespace over a limit: give it back and
        wait (Pending, QuotaExceeded or OutsideAllowedHours; no retry is counted: the answer
        is about the namespace, not the capacity this reservation could use), or fail when it
        alone exceeds one. None when it keeps every limit."""
        assert self.planner is not None
        verdict = self._limit_verdict(limits, fair_share.booking_use(booking))
        if verdict is None:
            return None
        self.planner.release(self.rsv.uid)  # booked a moment ago, never held: not recorded
        where = f"pool {spec.pool!r}, namespace {self.rsv.namespace!r}"
        if verdict.alone:
            return self.fail(Reason.QUOTA_EXCEEDED.value,
                             f"over a limit of {where}: {verdict.message}")
        self.wake(verdict.retry_at)
        self.wake(self._max_wait_deadline(spec))
        return self.wait(verdict.reason, f"over a limit of {where}: {verdict.message}",
                         next_available={"available": False, "availStart": None,
                                         "availEnd": None})

    def _hold(self, spec: ParsedSpec, booking: Booking) -> Outcome:
        """A booking was just made: Active if it starts now and is claimed, else Scheduled."""
        self.status["startTime"] = format_time(booking.start)
        self.status["endTime"] = _fmt(booking.end)
        self.status["allocated"] = allocation_status(booking)
        if booking.start <= self.now and (not spec.manual or spec.claimed):
            return self._activate(spec, booking)
        pre_id = self.mint()
        expires = self._claim_deadline(booking.start)
        self.status["preReservationId"] = pre_id
        self.status["preReservationExpires"] = format_time(expires)
        self.status["phase"] = SCHEDULED
        what = booking.R.dumps()
        window = f"{format_time(booking.start)} to {_fmt(booking.end)}"
        if spec.manual:
            message = (f"pre-reserved {what} on pool {spec.pool!r} from {window}; "
                       f"set spec.claimed: true by {format_time(expires)}")
            waiting = (Reason.WAITING_FOR_CLAIM.value if booking.start <= self.now
                       else Reason.WAITING_FOR_START.value)
        else:
            message = f"pre-reserved {what} on pool {spec.pool!r} from {window}"
            waiting = Reason.WAITING_FOR_START.value
        self._scheduled_condition(True, Reason.WINDOW_BOOKED.value, message)
        self._kstatus(False, (waiting, message), None, waiting, message)
        self.event("Scheduled", f"{message} (id {pre_id})")
        self.wake(booking.start if booking.start > self.now else None)
        if spec.manual:
            self.wake(expires)
        return self.outcome()

    def _activate(self, spec: ParsedSpec, booking: Booking) -> Outcome:
        res_id = self.mint()
        self.status["unclaimedSince"] = None
        self.status["reservationId"] = res_id
        self.status["preReservationId"] = None
        self.status["preReservationExpires"] = None
        self.status["phase"] = ACTIVE
        self.status["startTime"] = format_time(booking.start)
        self.status["endTime"] = _fmt(booking.end)
        self.status["allocated"] = allocation_status(booking)
        self.status["config"] = spec.config
        message = (f"granted {booking.R.dumps()} on pool {spec.pool!r} until "
                   f"{_fmt(booking.end)}")
        self._scheduled_condition(False, Reason.CLAIMED.value, message)
        self._kstatus(True, None, None, Reason.GRANTED.value, message)
        self.event(Reason.GRANTED.value, f"{message} (id {res_id})")
        self.granted = True
        self._degraded(booking)
        self.wake(booking.end)
        return self.outcome()

    # -- Scheduled ---------------------------------------------------------------------------

    def _scheduled(self, spec: ParsedSpec, request: Any, booking: Booking,
                   length: float, generation_changed: bool) -> Outcome:
        assert self.planner is not None
        planner, now = self.planner, self.now
        planned_key = self.rsv.planned_key
        if planned_key is not None and planned_key != spec.plan_key:
            self.event(Reason.REPLANNED.value, "the spec changed; planning the window anew")
            return self._plan(spec, request, length, count_retry=False)
        if planned_key is None and generation_changed:
            # No record of what the window was planned for (the operator restarted) and the
            # spec changed since the last committed decision: judge it like a live edit.
            self.event(Reason.REPLANNED.value,
                       f"the spec changed (generation {self.old.get('observedGeneration')} "
                       f"to {self.rsv.generation}) while it was Scheduled; planning the "
                       "window anew")
            return self._plan(spec, request, length, count_retry=False)
        if planned_key is None:
            self.rsv.planned_key = spec.plan_key
        if _touches(booking, planner.down()):
            self.event(Reason.REPLANNED.value,
                       "ranks of the window held went down; planning a new window", True)
            return self._plan(spec, request, length, count_retry=False)
        blocks = planner.maintenance_over(self.rsv.uid)
        if blocks:
            self.event(Reason.REPLANNED.value,
                       f"the window held reaches into maintenance {maintenance_label(blocks[0])}"
                       "; planning a new window", True)
            return self._plan(spec, request, length, count_retry=False)
        expiration = planner.expiration
        if expiration and (booking.end is None or booking.end > expiration):
            self.event(Reason.REPLANNED.value,
                       f"the pool now expires at {format_time(expiration)}, before the end of "
                       f"the window held ({_fmt(booking.end)}); planning a new window", True)
            return self._plan(spec, request, length, count_retry=False)
        expires = parse_time_or_none(self.status.get("preReservationExpires"))
        if expires is None:
            expires = self._claim_deadline(booking.start)
        # Move earlier when capacity freed and the start asked for has already passed.
        wanted = max(self._anchor(spec), _floor(now))
        if wanted < booking.start:
            moved = self._move_earlier(spec, request, booking, length, wanted)
            if moved is not None:
                return moved
        if booking.start <= now:
            if not spec.manual or spec.claimed:
                return self._activate(spec, booking)
            if now >= expires:
                return self._late_claim(spec, request, length, expires)
            message = (f"window started at {format_time(booking.start)}; waiting for "
                       f"spec.claimed: true until {format_time(expires)}")
            self._kstatus(False, (Reason.WAITING_FOR_CLAIM.value, message), None,
                          Reason.WAITING_FOR_CLAIM.value, message)
            self.wake(expires)
            return self.outcome()
        self.wake(booking.start)
        if spec.manual:
            self.wake(expires)
        return self.outcome()

    def _move_earlier(self, spec: ParsedSpec, request: Any, booking: Booking, length: float,
                      wanted: float) -> Outcome | None:
        assert self.planner is not None
        planner, uid = self.planner, self.rsv.uid
        moved: Booking | None = None
        try:
            # Asked without letting go of the window held: when it cannot move, nothing in
            # the planner changes (its generation neither, issue 11 item 4).
            moved = planner.move_earlier(uid, request, length, wanted, spec.mode,
                                         deadline=booking.start - 1)
        except (InsufficientResources, InfeasibleRequest, ValueError):
            moved = None
        if moved is None:
            return None
        if self.pool.policy.limits:
            limits = self._applicable_limits()
            if limits is None or (limits and self._limit_verdict(
                    limits, fair_share.booking_use(moved)) is not None):
                # The earlier window would take the namespace over a limit: keep the one held.
                planner.release(uid)
                planner.restore(uid, booking.R, booking.start, booking.end, booking.mode,
                                booking.priority, booking.preemptible)
                return None
        self.event("Moved", f"capacity freed: window moved from {format_time(booking.start)} "
                            f"to {format_time(moved.start)}")
        self.status["nextAvailable"] = {
            "available": moved.start <= wanted,
            "availStart": format_time(moved.start),
            "availEnd": _fmt(moved.end),
        }
        return self._hold(spec, moved)

    def _late_claim(self, spec: ParsedSpec, request: Any, length: float,
                    expires: float) -> Outcome:
        # How long this Manual reservation has been holding windows nobody claimed: bounded
        # by the pool's policy.maxUnclaimedHold, whatever maxRetry allows (maxRetry 1000 with
        # claimTimeout 5m once meant 83 h of windows held for nobody).
        window_start = parse_time_or_none(self.old.get("startTime"))
        since = parse_time_or_none(self.status.get("unclaimedSince"))
        if since is None:
            since = window_start if window_start is not None else expires
        limit = self.pool.policy.max_unclaimed_hold
        if self.now - since >= limit:
            self.status["unclaimedSince"] = None
            return self.fail(Reason.CLAIM_EXPIRED.value,
                             f"not claimed by {format_time(expires)}, and windows held since "
                             f"{format_time(since)} were never claimed: past the pool's "
                             f"policy.maxUnclaimedHold ({_human(limit)}), no further window "
                             "is held")
        self.status["unclaimedSince"] = format_time(since)
        self.event(Reason.CLAIM_EXPIRED.value,
                   f"not claimed by {format_time(expires)}: the window is lost; planning anew",
                   warning=True)
        self._release()
        retries = int(self.status.get("retryCount") or 0) + 1
        self.status["retryCount"] = retries
        if retries > spec.max_retry:
            return self.fail(Reason.RETRY_EXCEEDED.value,
                             f"claim deadline missed; {retries} failed attempts "
                             f"(maxRetry {spec.max_retry})")
        return self._plan(spec, request, length, count_retry=False)

    # -- Active ------------------------------------------------------------------------------

    def _active(self, spec: ParsedSpec, booking: Booking, length: float | None,
                generation_changed: bool) -> Outcome:
        assert self.planner is not None
        if generation_changed and length is not None:
            held_start = parse_time_or_none(self.status.get("startTime")) or booking.start
            wanted_end = held_start + length
            if booking.end is not None and wanted_end != booking.end:
                outcome = self._change_end(booking, wanted_end)
                if outcome is not None:
                    return outcome
                booking = self.planner.get(self.rsv.uid) or booking
        if generation_changed and spec.config != self.status.get("config"):
            self.status["config"] = spec.config
        expiration = self.planner.expiration
        if expiration and (booking.end is None or booking.end > expiration):
            cut = self._cut_to_expiration(booking, expiration)
            if cut is None:
                return self.expire()
            booking = cut
        ended = self._preemption_pending(booking) or self._maintenance(booking)
        if ended is not None:
            return ended
        booking = self.planner.get(self.rsv.uid) or booking
        if booking.end is not None and self.now >= booking.end:
            return self.expire()
        idle = self._idle(spec, booking)
        if idle is not None:
            return idle
        self._degraded(booking)
        self.wake(booking.end)
        return self.outcome()

    def _cut_to_expiration(self, booking: Booking, expiration: float) -> Booking | None:
        """The pool's expiration was lowered below the end of this grant: nothing is granted
        past it, so the window now ends at the expiration. Returns the shortened booking, or
        None when the expiration has already passed (the caller expires it now)."""
        assert self.planner is not None
        gen, now = self.rsv.generation, self.now
        new_end = max(expiration, booking.start)
        message = (f"the pool's expiration was moved to {format_time(expiration)}: the window "
                   f"now ends at {format_time(new_end)} instead of {_fmt(booking.end)}")
        self.status["endTime"] = format_time(new_end)
        set_condition(self.conditions, SHORTENED, True, Reason.POOL_EXPIRED.value, message,
                      gen, now)
        self.event(Reason.POOL_EXPIRED.value, message, warning=True)
        if new_end <= now:
            return None
        self.planner.extend(self.rsv.uid, new_end)
        set_condition(self.conditions, ConditionType.READY.value, True, Reason.GRANTED.value,
                      f"granted until {format_time(new_end)}", gen, now)
        self.status["message"] = (f"granted {booking.R.dumps()} on pool {self.pool.name!r} "
                                  f"until {format_time(new_end)} (cut to the pool's expiration)")
        return self.planner.get(self.rsv.uid) or booking

    def _change_end(self, booking: Booking, wanted_end: float) -> Outcome | None:
        assert self.planner is not None
        gen, now = self.rsv.generation, self.now
        if wanted_end <= now:
            self.status["endTime"] = format_time(max(booking.start + 1, now))
            return self.expire()
        if wanted_end > LAST_EPOCH:
            message = f"cannot move the end past {LAST_TIME}, the last time RFC 3339 can write"
            set_condition(self.conditions, EXTENDED, False, Reason.EXTENSION_DENIED.value,
                          message, gen, now)
            self.event(Reason.EXTENSION_DENIED.value, message, warning=True)
            return None
        longer = booking.end is None or wanted_end > booking.end
        if longer and self.pool.policy.limits:
            limits = self._applicable_limits()
            refusal: str | None = None
            if limits is None:
                refusal = "the namespace's labels are not known yet (policy.limits select by them)"
            elif limits:
                R = booking.R
                verdict = self._limit_verdict(limits, fair_share.Use(
                    booking.start, wanted_end, R.count("node"), R.count("core"),
                    R.count("gpu")))
                refusal = None if verdict is None else verdict.message
            if refusal is not None:
                message = f"cannot move the end to {format_time(wanted_end)}: {refusal}"
                set_condition(self.conditions, EXTENDED, False, Reason.EXTENSION_DENIED.value,
                              message, gen, now)
                self.event(Reason.EXTENSION_DENIED.value, message, warning=True)
                return None
        try:
            self.planner.extend(self.rsv.uid, wanted_end)
        except (InsufficientResources, ValueError) as exc:
            message = f"cannot move the end to {format_time(wanted_end)}: {exc}"
            set_condition(self.conditions, EXTENDED, False, Reason.EXTENSION_DENIED.value,
                          message, gen, now)
            self.event(Reason.EXTENSION_DENIED.value, message, warning=True)
            return None
        verb = "extended" if booking.end is None or wanted_end > booking.end else "shortened"
        message = f"{verb} to {format_time(wanted_end)}"
        self.status["endTime"] = format_time(wanted_end)
        set_condition(self.conditions, EXTENDED, True, Reason.EXTENDED.value, message, gen, now)
        set_condition(self.conditions, ConditionType.READY.value, True, Reason.GRANTED.value,
                      f"granted until {format_time(wanted_end)}", gen, now)
        self.event(Reason.EXTENDED.value, message)
        return None

    def _degraded(self, booking: Booking) -> None:
        assert self.planner is not None
        down = _touched(booking, self.planner.down())
        previous = _condition(self.conditions, ConditionType.RESOURCES_DEGRADED.value)
        was_degraded = previous is not None and previous.get("status") == "True"
        if down:
            message = (
                f"rank {down} of this reservation is down"
                if len(down) == 1
                else f"ranks {down} of this reservation are down"
            )
            set_condition(self.conditions, ConditionType.RESOURCES_DEGRADED.value, True,
                          Reason.RESOURCES_DEGRADED.value, message, self.rsv.generation,
                          self.now)
            if not was_degraded:
                self.event(Reason.RESOURCES_DEGRADED.value, message, warning=True)
        elif was_degraded:
            set_condition(self.conditions, ConditionType.RESOURCES_DEGRADED.value, False,
                          Reason.RESOURCES_HEALTHY.value, "all ranks are up again",
                          self.rsv.generation, self.now)
            self.event(Reason.RESOURCES_HEALTHY.value, "all ranks of this reservation are up")


def maintenance_label(block: Block) -> str:
    """How messages name a maintenance window: "'firmware' 2026-12-05T02:00Z-06:00Z"."""
    start, end = format_time(block.start), format_time(block.end)
    short_start = start[:16] + "Z" if start.endswith(":00Z") else start
    short_end = end[:16] + "Z" if end.endswith(":00Z") else end
    if short_end[:10] == short_start[:10]:
        short_end = short_end[11:]
    return f"{block.name!r} {short_start}-{short_end}"


def _touched(booking: Booking, down: IDset) -> IDset:
    return ranks_of(booking.R.to_dict()) & down


def _touches(booking: Booking, down: IDset) -> bool:
    return bool(down) and bool(_touched(booking, down))


def _reason(status: Mapping[str, Any], type_: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            reason = condition.get("reason")
            return str(reason) if reason else None
    return None


def _raw_start_and_max_wait(spec: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """spec.startTime and spec.maxWait read cheaply from the spec as received (None where
    absent or unreadable: the full parse reports those)."""
    start: float | None = None
    max_wait: float | None = None
    try:
        if isinstance(spec.get("startTime"), str):
            start = _floor(parse_time(spec["startTime"]))
    except ValueError:
        start = None
    try:
        if isinstance(spec.get("maxWait"), str):
            max_wait = parse_duration(spec["maxWait"])
    except ValueError:
        max_wait = None
    return start, max_wait


def _idle_timeout(spec: Mapping[str, Any]) -> float | None:
    """spec.idleTimeout read cheaply (None where absent or unreadable: the parse reports it)."""
    value = spec.get("idleTimeout")
    if not isinstance(value, str):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _human(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    text += f"{secs}s" if secs or not text else ""
    return text


def decide(rsv: Reservation, pool: PoolContext, planner: Planner | None, now: float,
           consumers: ConsumerView | None = None) -> Outcome:
    """Advance one reservation's life cycle at time `now` (see the module docstring).
    `consumers`: its consumer Pods as the operator sees them (None: not known - not watched,
    or not listed yet), for status.consumers and spec.idleTimeout."""
    outcome = _Decider(rsv, pool, planner, now, consumers).decide()
    _stamp_seal(outcome.status, rsv, pool, planner)
    size = len(canonical(outcome.status))
    if size <= MAX_STATUS_BYTES:
        return outcome
    # etcd would refuse to store it (HTTP 500, which looks like an outage and would be retried
    # forever): whatever the decision booked is given back, and the reservation fails instead.
    decider = _Decider(rsv, pool, planner, now, consumers)
    decider.status["config"] = None
    decider.status["nextAvailable"] = None
    return decider.fail(
        Reason.INVALID_SPEC.value,
        f"the status of this reservation would be {size} bytes of JSON, more than the "
        f"{MAX_STATUS_BYTES} an object may hold here (the grant lists too many host names, "
        "or spec.config is too large)",
    )


def booking_facts(status: Mapping[str, Any], rsv: Reservation) -> tuple[
        str | None, str | None, Any, float | None, float | None, str]:
    """What a status says is booked, as a restore re-registers it: (phase, ID, R, start, end,
    mode)."""
    phase = status.get("phase")
    phase = phase if isinstance(phase, str) else None
    booking_id = status.get("reservationId" if phase == ACTIVE else "preReservationId")
    allocated = status.get("allocated") or {}
    # The mode booked (recorded since it could change meanwhile); the spec's for statuses
    # written before it was recorded.
    mode = allocated.get("mode") or rsv.spec.get("mode") or "exclusive"
    return (phase, booking_id if isinstance(booking_id, str) else None, allocated.get("R"),
            parse_time_or_none(status.get("startTime")),
            parse_time_or_none(status.get("endTime")), str(mode))


def _stamp_seal(status: dict[str, Any], rsv: Reservation, pool: PoolContext,
                planner: Planner | None) -> None:
    """Set status.bookingSeal for the status about to be committed: over the booking the
    planner holds (not over what the status says: a status someone else rewrote while the
    operator ran is never sealed as if it were true), with the phase and ID the status gives
    it. Cleared when nothing is held; left as committed when the status holds something this
    planner does not (no planner yet) or there is no seal: nothing here vouches for it."""
    phase = status.get("phase")
    if phase not in HOLDING_PHASES:
        # (The whole status is written: absent is removed.)
        status.pop("bookingSeal", None)
        return
    seal = pool.seal
    booking = planner.get(rsv.uid) if planner is not None else None
    if seal is None or booking is None:
        # No seal here (a pool context made before the pool is usable; the simulation) or
        # no booking to vouch for.
        return
    booking_id = status.get("reservationId" if phase == ACTIVE else "preReservationId")
    status["bookingSeal"] = seal.seal(rsv.uid, pool.uid, phase, booking_id,
                                      booking.R.to_dict(), booking.start, booking.end,
                                      booking.mode)


def release(rsv: Reservation, planner: Planner | None,
            ledger: fair_share.UsageLedger | None = None, now: float = 0.0) -> Booking | None:
    """Free whatever the reservation holds (it is being deleted); what of it was held is
    recorded in `ledger` (it counts toward maxNodeHoursPerWeek for a week)."""
    if planner is None:
        return None
    released = planner.release(rsv.uid)
    if released is not None and ledger is not None:
        ledger.record(rsv.uid, rsv.namespace, released, now)
    return released


def ended_use(rsv: Reservation, planner: Planner, now: float) -> fair_share.Use | None:
    """What an Expired reservation held in the last week, as far as its object still says:
    its window (status.startTime/endTime) and the nodes its request asks for at least (the
    grant itself is no longer in its status). For the ledger of policy.limits after a
    restart; None when it says nothing usable or ended over a week ago."""
    if rsv.phase != EXPIRED:
        return None
    status = rsv.status
    start = parse_time_or_none(status.get("startTime"))
    end = parse_time_or_none(status.get("endTime"))
    if start is None or end is None or end <= start or end <= now - fair_share.WEEK:
        return None
    try:
        nodes = max(planner.parse(parse_spec(rsv.spec).jobspec).nnodes, 1)
    except (SpecError, ValueError, TypeError, KeyError, OSError):
        nodes = 1
    return fair_share.Use(start, min(end, now), nodes, 0, 0)


def restore(rsv: Reservation, planner: Planner, seal: BookingSeal | None = None,
            pool_uid: str = "") -> str | None:
    """Re-register a committed grant after a restart; returns an error message on failure.

    With a `seal`, only a booking whose status.bookingSeal checks out is re-registered; one
    that does not is left out (never held twice, never held for someone who was not granted
    it), marked `rsv.unverified`, and its next decision plans it anew with a Warning Event."""
    if rsv.phase not in HOLDING_PHASES or rsv.deleting:
        return None
    status = rsv.status
    phase, booking_id, R, start, end, mode = booking_facts(status, rsv)
    if not R or start is None:
        return "status says it holds resources but status.allocated.R or startTime is missing"
    if seal is not None:
        why = seal.check(status.get("bookingSeal"), rsv.uid, pool_uid, phase, booking_id, R,
                         start, end, mode)
        if why is not None:
            rsv.unverified = why
            return f"not restored: {why}"
    preemptible = (rsv.spec or {}).get("preemptible") is True
    try:
        planner.restore(rsv.uid, R, start, end, mode, rsv.priority, preemptible)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return str(exc)
    return None

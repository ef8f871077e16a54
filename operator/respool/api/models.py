"""Pydantic v2 models of the respool API (group ``respool.io``, version ``v1alpha1``).

These models are the single source of the CRD schemas in ``crds/`` (``respool.api.crds``
derives them), so every field, bound and pattern here is also enforced by the API server at
admission. Rules that span several fields are written twice, on purpose, in the same words: as a
pydantic validator (so Python callers get the error before they talk to the cluster) and as a
CEL rule (``x-kubernetes-validations`` in ``json_schema_extra``) that the API server runs.

Wire format: camelCase field names, exactly those of DESIGN.md section 1. Python attributes are
snake_case. ``Model.model_validate(wire_dict)`` accepts what kopf hands over (any mapping);
``model.to_wire()`` (= ``model_dump(by_alias=True, exclude_none=True, mode="json")``) gives the
wire dict back. Status models default every field to ``None`` so that a partially filled status
dumps to exactly the fields that were set: safe to send as a merge patch.
"""

from __future__ import annotations

import contextlib
import json
import re
import zoneinfo
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from respool.api import patterns
from respool.api.timefmt import parse_duration, parse_time
from respool.pool import Hostlist, IDset, hostlist_size

GROUP = "respool.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds that keep hostile objects out and keep the CEL cost estimates of the API server low.
MAX_IDSET_LENGTH = 65536
MAX_HOSTLIST_LENGTH = 65536
MAX_R_LITE_ENTRIES = 16384
MAX_NODELIST_ENTRIES = 16384
MAX_PROPERTIES = 256
MAX_NAME_LENGTH = 63
MAX_MESSAGE_LENGTH = 32768
MAX_CONDITIONS = 16
#: Most displacers status.displacedBy keeps (one per preemption of the reservation).
MAX_DISPLACED_BY = 256
MAX_COUNT = 1_000_000
MAX_RETRY = 1000
MAX_CONFIG_BYTES = 262144
"""spec.config is echoed to status.config: both must fit in one object (etcd stores at most
1.5 MiB per object, and answers a larger write with HTTP 500), so config is kept well below."""
MAX_CONFIG_DEPTH = 32
"""How deep spec.config may nest objects and arrays: every reader of the object (this
operator's JSON parser among them) walks it recursively, and Python's stops at ~1,000 levels."""
MAX_CONSTRAINT_ITEMS = 8
MAX_CONSTRAINT_PROPERTIES = 32
MAX_CONSTRAINT_HOSTLISTS = 32
CONSTRAINT_MAX_DEPTH = 3
"""Levels of constraint objects: the top one plus two levels of nested and/or/not."""
# The cost budget of one reservation's constraints. The operator evaluates them whenever the
# reservation is planned (a Pending one on every capacity change), on the event loop that
# serves every pool; past these bounds one object could block it for seconds (a tree of
# 'n0[0-262143]' hostlists once took minutes). At these bounds parsing and evaluating the
# largest admitted tree costs a few milliseconds (bench/bench_hostile.py).
MAX_CONSTRAINT_NODES = 32
"""Constraint objects in one spec, nested ones included (the schema alone allows 601)."""
MAX_CONSTRAINT_TERMS = 256
"""Properties, hostlists and ranks entries over all constraint objects of one spec."""
MAX_CONSTRAINT_HOSTS = 4096
"""Host names all constraint hostlists of one spec may name together, counted before any is
expanded. Neither the schema nor CEL can count the names of a hostlist such as 'n[0-99999]',
so this one is judged by the models (the client refuses it before sending) and by the operator
(Failed/InvalidSpec at once); to select more hosts, use ranks or properties."""
MAX_CONSUMERS_LISTED = 20
"""Names of consumer Pods listed in status.consumers.pods (the count has them all)."""
JOBSPEC_MAX_DEPTH = 3
"""Levels of jobspec vertices: node > slot > core/gpu (RFC 25)."""

# ---------------------------------------------------------------------------------------------
# Vocabulary: phases, modes, condition types and reasons.


class Phase(StrEnum):
    """``status.phase`` of a ResourceReservation (DESIGN.md section 2)."""

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    FAILED = "Failed"


class Mode(StrEnum):
    """Whether others may share what a reservation was granted in the same time."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"


class ClaimPolicy(StrEnum):
    """Auto: claimed when its window starts. Manual: the holder sets ``spec.claimed: true``."""

    AUTO = "Auto"
    MANUAL = "Manual"


class Enforcement(StrEnum):
    """``ResourcePool.spec.enforcement``: whether the operator keeps others' Pods off the Nodes
    an exclusive reservation holds (the ranks' host names are Kubernetes Node names)."""

    NONE = "None"
    TAINT = "Taint"


class MaintenanceMode(StrEnum):
    """``ResourcePool.spec.maintenance[].mode``. Drain: nothing new is granted into the window
    and Active holders end at its start. Evict: the same, and Active holders that overlap it
    are cut back at once (status.endTime moves to its start when it is declared)."""

    DRAIN = "Drain"
    EVICT = "Evict"


class OnEnd(StrEnum):
    """``spec.onEnd``: what happens to a reservation's consumer Pods when it ends."""

    LEAVE = "Leave"
    EVICT = "Evict"


class ConditionType(StrEnum):
    """Condition types on both kinds. Ready/Reconciling/Stalled follow kstatus."""

    READY = "Ready"
    SCHEDULED = "Scheduled"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    RESOURCES_DEGRADED = "ResourcesDegraded"
    # A Scheduled window was taken by a reservation of higher priority and planned anew.
    REPLANNED = "Replanned"
    # An Active preemptible holder will end (Failed/Preempted) when the grace period is over.
    PREEMPTION_PENDING = "PreemptionPending"


class Reason(StrEnum):
    """Machine reasons used in conditions and Events (CamelCase, as Kubernetes writes them)."""

    # Stalled (the reservation cannot proceed; phase Failed, or Pending for PoolNotFound).
    INFEASIBLE = "Infeasible"
    RETRY_EXCEEDED = "RetryExceeded"
    MAX_WAIT_EXCEEDED = "MaxWaitExceeded"
    POOL_NOT_FOUND = "PoolNotFound"
    POOL_DELETING = "PoolDeleting"
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    INVALID_SPEC = "InvalidSpec"
    RESOURCES_LOST = "ResourcesLost"
    POOL_EXPIRED = "PoolExpired"
    PREEMPTED = "Preempted"
    MAINTENANCE = "Maintenance"
    # Reconciling (work in progress).
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    WAITING_FOR_START = "WaitingForStart"
    WAITING_FOR_CLAIM = "WaitingForClaim"
    CLAIM_EXPIRED = "ClaimExpired"
    # Fair share (policy.limits): Pending while over a limit, Failed when alone over one.
    QUOTA_EXCEEDED = "QuotaExceeded"
    OUTSIDE_ALLOWED_HOURS = "OutsideAllowedHours"
    REPLANNED = "Replanned"
    # Expired early: an Active hold with no consumer Pod for spec.idleTimeout.
    IDLE = "Idle"
    # A restore found a booking in status whose status.bookingSeal does not check out: it was
    # not re-registered, and the reservation is planned anew (a Warning Event says why).
    BOOKING_UNVERIFIED = "BookingUnverified"
    # Ready / Scheduled / ResourcesDegraded.
    GRANTED = "Granted"
    CLAIMED = "Claimed"
    WINDOW_BOOKED = "WindowBooked"
    EXPIRED = "Expired"
    EXTENDED = "Extended"
    EXTENSION_DENIED = "ExtensionDenied"
    RESOURCES_DEGRADED = "ResourcesDegraded"
    RESOURCES_HEALTHY = "ResourcesHealthy"
    # Pools.
    POOL_READY = "PoolReady"
    INVALID_RESOURCES = "InvalidResources"
    IN_USE = "InUse"


LAST_TIME = "9999-12-31T23:59:59Z"
"""The latest time RFC 3339 (and CEL's timestamp()) can write: no window may end after it."""
FIRST_TIME = "1970-01-01T00:00:00Z"
"""The engine counts time in seconds since this instant; a pool cannot expire before it."""
_EXPIRATION_BEFORE_EPOCH = f"spec.expiration must not be before {FIRST_TIME}"
_WINDOW_PAST_LAST_TIME = (
    f"spec.startTime plus spec.duration must not end after {LAST_TIME}, the last time RFC 3339 "
    "can write"
)


# ---------------------------------------------------------------------------------------------
# String types shared by many fields.


def _parses_as_idset(value: str) -> str:
    """What the pattern cannot judge: a reversed range such as '3-1' (ValueError names it)."""
    IDset(value)
    return value


def _parses_as_hostlist(value: str) -> str:
    """What the pattern cannot judge: reversed ranges, more names than the engine holds."""
    Hostlist(value)
    return value


def _names_few_hosts(value: str) -> str:
    """Checked like a hostlist but counted, not expanded: the spec's budget is judged first."""
    hostlist_size(value)
    return value


IdSet = Annotated[
    str,
    StringConstraints(pattern=patterns.IDSET, max_length=MAX_IDSET_LENGTH),
    Field(description="An RFC 22 idset, e.g. '0-3,7' (ascending, no repeats)."),
]
NonEmptyIdSet = Annotated[
    str,
    StringConstraints(pattern=patterns.NONEMPTY_IDSET, max_length=MAX_IDSET_LENGTH),
    Field(description="A non-empty RFC 22 idset, e.g. '0-3,7'."),
]
# The idsets of R itself (ranks, cores, GPUs, properties) are parsed by the engine when the
# operator builds the pool, with messages naming the entry; parsing them here as well would
# triple the cost of validating a 16,384-entry R. These are the idsets nothing else parses
# before they are used.
ParsedIdSet = Annotated[IdSet, AfterValidator(_parses_as_idset)]
NonEmptyParsedIdSet = Annotated[NonEmptyIdSet, AfterValidator(_parses_as_idset)]
HostList = Annotated[
    str,
    StringConstraints(pattern=patterns.HOSTLIST, max_length=MAX_HOSTLIST_LENGTH),
    AfterValidator(_parses_as_hostlist),
    Field(description="An RFC 29 hostlist, e.g. 'node[0-3],gpu01'."),
]
ConstraintHostList = Annotated[
    str,
    StringConstraints(pattern=patterns.HOSTLIST, max_length=MAX_HOSTLIST_LENGTH),
    AfterValidator(_names_few_hosts),
    Field(description="An RFC 29 hostlist, e.g. 'node[0-3],gpu01'."),
]


def _is_duration(value: str) -> str:
    """The schema's pattern, with a message a person can act on (the pattern is long)."""
    if _DURATION.match(value) is None:
        raise ValueError(
            f"{value[:80]!r} is not a duration: write it like '90s', '30m', '1h30m' or '1.5h' "
            "(units h, m, s, ms, us, ns, largest first, each at most once; at most 999999h)"
        )
    return value


_DURATION = re.compile(patterns.DURATION)
Duration = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_is_duration),
    Field(
        description="A Go-style duration: '90s', '30m', '1h30m', '1.5h'.",
        json_schema_extra={"pattern": patterns.DURATION},
    ),
]
Timestamp = Annotated[
    str,
    StringConstraints(pattern=patterns.RFC3339, max_length=64),
    Field(description="An RFC 3339 time with a zone, e.g. '2026-12-01T08:00:00Z'."),
]
PropertyName = Annotated[
    str, StringConstraints(pattern=patterns.PROPERTY_NAME, min_length=1, max_length=128)
]
PropertyMatch = Annotated[
    str, StringConstraints(pattern=patterns.PROPERTY_MATCH, min_length=1, max_length=129)
]
LabelKey = Annotated[str, StringConstraints(pattern=patterns.LABEL_KEY, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=patterns.LABEL_VALUE, max_length=63)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


# CEL snippets reused below. Patterns guard timestamp()/duration() so that a malformed string
# yields only the pattern's message, not a CEL evaluation error as well.
def _cel_string(text: str) -> str:
    """A CEL single-quoted string literal holding ``text``."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _time_ok(expr: str) -> str:
    return (f"({expr}.matches({_cel_string(patterns.RFC3339)}) "
            f"&& !{expr}.matches({_cel_string(patterns.RFC3339_OUT_OF_RANGE)}))")


def _duration_ok(expr: str) -> str:
    return f"{expr}.matches({_cel_string(patterns.DURATION)})"


def _cel(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> JsonDict:
    """One ``x-kubernetes-validations`` entry."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


class WireModel(BaseModel):
    """Base: camelCase aliases on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The wire dict: camelCase keys, JSON types, unset (None) fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(WireModel):
    """Status is written by the operator; reading tolerates fields a newer operator added."""

    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------------------
# Shared pieces: conditions, label selectors, R version 1.


class Condition(StatusModel):
    """A Kubernetes condition (the metav1.Condition shape, as kstatus and kubectl wait read it)."""

    type: Annotated[str, StringConstraints(pattern=patterns.CONDITION_TYPE, max_length=316)]
    status: Literal["True", "False", "Unknown"]
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    last_transition_time: str | None = Field(default=None, max_length=64)
    reason: (
        Annotated[str, StringConstraints(pattern=patterns.CONDITION_REASON, max_length=1024)] | None
    ) = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class LabelSelectorRequirement(WireModel):
    """One ``matchExpressions`` entry of a label selector."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                    " : (!has(self.values) || size(self.values) == 0)",
                    "operators In and NotIn need a non-empty 'values' list; Exists and "
                    "DoesNotExist take no values",
                )
            ]
        }
    )

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[LabelValue], Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _values_match_operator(self) -> Self:
        wants_values = self.operator in ("In", "NotIn")
        if wants_values and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty 'values' list")
        if not wants_values and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(WireModel):
    """A Kubernetes label selector; an empty selector selects everything."""

    match_labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=64)] | None = Field(
        default=None,
        json_schema_extra={
            "x-respool-key-message": "matchLabels keys must be valid label keys ([prefix/]name)"
        },
    )
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] | None = None


class RliteChildren(WireModel):
    """The resources every rank of an R_lite entry owns."""

    core: NonEmptyIdSet
    gpu: IdSet | None = None


class RliteEntry(WireModel):
    """One ``R_lite`` entry: these ranks, each with these children."""

    rank: NonEmptyIdSet
    children: RliteChildren


class Rv1Execution(WireModel):
    """``execution`` of R version 1 (RFC 20)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.starttime) || !has(self.expiration) || self.starttime == 0.0 "
                    "|| self.expiration == 0.0 || self.expiration > self.starttime",
                    "execution.expiration must be later than execution.starttime (0 means unset)",
                )
            ]
        }
    )

    r_lite: Annotated[list[RliteEntry], Field(min_length=1, max_length=MAX_R_LITE_ENTRIES)] = Field(
        alias="R_lite", description="Ranks and the cores/GPUs each owns."
    )
    nodelist: Annotated[list[HostList], Field(max_length=MAX_NODELIST_ENTRIES)] | None = Field(
        default=None, description="Host names of the ranks in rank order (RFC 29 hostlists)."
    )
    properties: (
        Annotated[dict[PropertyName, NonEmptyIdSet], Field(max_length=MAX_PROPERTIES)] | None
    ) = Field(
        default=None,
        description="Property name -> idset of the ranks that have it.",
        json_schema_extra={
            "x-respool-key-message": "property names are 1-128 characters without white space "
            "or any of ! & ' \" ^ ` | ( )"
        },
    )
    starttime: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Epoch seconds; 0 = unset."
    )
    expiration: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Epoch seconds; 0 = unset."
    )
    nslots: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        default=None, description="Slots granted (only in an allocation's R)."
    )

    @model_validator(mode="after")
    def _window_in_order(self) -> Self:
        if self.starttime and self.expiration and self.expiration <= self.starttime:
            raise ValueError(
                "execution.expiration must be later than execution.starttime (0 means unset)"
            )
        return self


class Rv1(WireModel):
    """R version 1 (Flux RFC 20): a resource set."""

    version: Literal[1] = Field(description="Always 1.")
    execution: Rv1Execution
    scheduling: dict[str, Any] | None = Field(
        default=None, description="Scheduler-private data, kept verbatim (for example a JGF graph)."
    )


# ---------------------------------------------------------------------------------------------
# ResourcePool


class ReminderPolicy(WireModel):
    """When a reservation's holder is reminded, by an Event, of its window's start and end."""

    starting_soon: Duration = Field(
        default="15m",
        description="Event StartingSoon this long before a Scheduled reservation's window "
        "starts (0s: none).",
    )
    ending_soon: Duration = Field(
        default="15m",
        description="Event EndingSoon this long before a Scheduled or Active reservation's "
        "window ends (0s: none).",
    )

    @model_validator(mode="after")
    def _durations_parse(self) -> Self:
        parse_duration(self.starting_soon)
        parse_duration(self.ending_soon)
        return self


#: Days of the week as allowedHours names them (Monday first, as ISO 8601 counts them).
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: A time of day on the wall clock, and the same with 24:00 (the end of the day) allowed.
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TIME_OF_DAY_OR_END = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
#: An IANA time zone name as written ('UTC', 'Europe/Berlin', 'Etc/GMT+5'); whether the
#: zone exists is judged by the models (zoneinfo) and the operator, not by the API server.
TIME_ZONE_NAME = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
MAX_LIMITS = 32
MAX_ALLOWED_HOURS = 16
MAX_NODE_HOURS = 1_000_000_000
MAX_USAGE_ENTRIES = 512


def _is_time_zone(value: str) -> str:
    """The zone must exist in the tz database the operator reads (zoneinfo)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value[:64]!r} is not a time zone the operator knows (write an "
                         "IANA name such as 'Europe/Berlin' or 'UTC')") from None
    return value


class AllowedHours(WireModel):
    """A stretch of wall-clock time, on some days of the week, in which windows may lie."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.from.matches(" + _cel_string(TIME_OF_DAY) + ")",
                    "allowedHours.from must be a time of day HH:MM, 00:00 to 23:59",
                    field_path=".from",
                ),
                _cel(
                    "self.to.matches(" + _cel_string(TIME_OF_DAY_OR_END) + ")",
                    "allowedHours.to must be a time of day HH:MM, 00:00 to 24:00",
                    field_path=".to",
                ),
                _cel(
                    "self.from != self.to",
                    "allowedHours.from and allowedHours.to must differ (the whole day is "
                    "from 00:00 to 24:00)",
                    field_path=".to",
                ),
                _cel(
                    "size(self.timeZone) > 0",
                    "allowedHours.timeZone must name a time zone, e.g. UTC or Europe/Berlin",
                    field_path=".timeZone",
                ),
                _cel(
                    "size(self.timeZone) == 0 || self.timeZone.matches("
                    + _cel_string(TIME_ZONE_NAME) + ")",
                    "allowedHours.timeZone must be an IANA time zone name, e.g. UTC or "
                    "Europe/Berlin",
                    field_path=".timeZone",
                ),
            ]
        }
    )

    days: Annotated[list[Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]],
                    Field(min_length=1, max_length=7)] | None = Field(
        default=None,
        description="Days on which the stretch begins (Mon..Sun; absent: every day). A "
        "stretch whose 'to' is not after its 'from' runs past midnight into the next day.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    from_: Annotated[str, StringConstraints(max_length=5)] = Field(
        alias="from",
        description="Wall-clock time the stretch begins, HH:MM (00:00 to 23:59).",
    )
    to: Annotated[str, StringConstraints(max_length=5)] = Field(
        description="Wall-clock time the stretch ends, HH:MM (24:00: midnight at the end of "
        "the day); one not after 'from' is on the next day.",
    )
    time_zone: Annotated[str, StringConstraints(max_length=64), AfterValidator(_is_time_zone)] = (
        Field(
            default="UTC",
            description="IANA time zone of the wall clock ('Europe/Berlin'); daylight-saving "
            "changes are followed.",
        )
    )

    @model_validator(mode="after")
    def _times_of_day(self) -> Self:
        if not self.time_zone or re.match(TIME_ZONE_NAME, self.time_zone) is None:
            raise ValueError("allowedHours.timeZone must be an IANA time zone name, e.g. UTC "
                             "or Europe/Berlin")
        if re.match(TIME_OF_DAY, self.from_) is None:
            raise ValueError("allowedHours.from must be a time of day HH:MM, 00:00 to 23:59")
        if re.match(TIME_OF_DAY_OR_END, self.to) is None:
            raise ValueError("allowedHours.to must be a time of day HH:MM, 00:00 to 24:00")
        if self.from_ == self.to:
            raise ValueError("allowedHours.from and allowedHours.to must differ (the whole "
                             "day is from 00:00 to 24:00)")
        return self


class NamespaceLimit(WireModel):
    """Fair share: what the reservations of each selected namespace may hold and book."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.maxDuration) || self.maxDuration.matches('[1-9]')",
                    "limits[].maxDuration must be longer than zero",
                    field_path=".maxDuration",
                ),
            ]
        }
    )

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="The namespaces this limit applies to (absent: every namespace). Usage is "
        "counted per namespace.",
    )
    max_nodes: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        default=None, description="Nodes a namespace's windows may hold at any one time."
    )
    max_cores: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        default=None, description="Cores a namespace's windows may hold at any one time."
    )
    max_gpus: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = Field(
        default=None, alias="maxGPUs",
        description="GPUs a namespace's windows may hold at any one time.",
    )
    max_node_hours_per_week: Annotated[int, Field(ge=0, le=MAX_NODE_HOURS)] | None = Field(
        default=None,
        description="Node-hours a namespace's windows (held, booked and ended) may add up to "
        "in any 7 days (a rolling week).",
    )
    max_duration: Duration | None = Field(
        default=None,
        description="The longest window of one reservation (policy.maxDuration still applies: "
        "the shorter one wins).",
    )
    max_advance: Duration | None = Field(
        default=None,
        description="How far ahead of now a window may start; a later one waits until it is "
        "this close.",
    )
    allowed_hours: Annotated[list[AllowedHours], Field(max_length=MAX_ALLOWED_HOURS)] | None = (
        Field(
            default=None,
            description="Windows must lie within these stretches of wall-clock time (any of "
            "them, back-to-back stretches joined); absent: any time.",
        )
    )

    @model_validator(mode="after")
    def _durations_parse(self) -> Self:
        if self.max_duration is not None and parse_duration(self.max_duration) <= 0:
            raise ValueError("limits[].maxDuration must be longer than zero")
        if self.max_advance is not None:
            parse_duration(self.max_advance)
        return self


#: Most entries in policy.maxPriority and in spec.maintenance.
MAX_PRIORITY_RULES = 32
MAX_MAINTENANCE_WINDOWS = 64
#: The range of a PriorityClass's value (the system classes reach 2,000,001,000).
MIN_PRIORITY = -2147483648
MAX_PRIORITY = 2000001000
DEFAULT_PREEMPTION_GRACE_PERIOD = "30s"
DEFAULT_EVICTION_GRACE_PERIOD = "30s"


class MaxPriority(WireModel):
    """One cap of ``policy.maxPriority``: the namespaces it selects may use priorities up to
    ``value``."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces this cap applies to (absent: all)."
    )
    value: Annotated[int, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = Field(
        description="The highest priority value these namespaces may use."
    )


class PoolPolicy(WireModel):
    """Limits and defaults a pool applies to its reservations."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.maxDuration) || !("
                    + _duration_ok("self.maxDuration")
                    + " && "
                    + _duration_ok("self.defaultDuration")
                    + ") || duration(self.defaultDuration) <= duration(self.maxDuration)",
                    "policy.defaultDuration must not be longer than policy.maxDuration",
                ),
                _cel(
                    "self.defaultDuration.matches('[1-9]')",
                    "policy.defaultDuration must be longer than zero",
                    field_path=".defaultDuration",
                ),
                _cel(
                    "!has(self.maxDuration) || self.maxDuration.matches('[1-9]')",
                    "policy.maxDuration must be longer than zero",
                    field_path=".maxDuration",
                ),
            ]
        }
    )

    default_duration: Duration = Field(
        default="1h", description="Used when a reservation gives neither endTime nor duration."
    )
    max_duration: Duration | None = Field(
        default="24h",
        description="The longest window a reservation may hold (default a day, so that no "
        "tenant can book a pool for years by default; raise it per pool, up to 999999h).",
    )
    claim_timeout: Duration = Field(
        default="5m",
        description="A pre-reservation not claimed this long after its start loses its window.",
    )
    max_unclaimed_hold: Duration | None = Field(
        default=None,
        description="How long a Manual reservation may keep holding windows that started "
        "without being claimed (absent: 1h): past it, a missed claim fails it (ClaimExpired) "
        "instead of holding yet another window.",
    )
    reminders: ReminderPolicy = Field(
        default_factory=ReminderPolicy,
        description="Events StartingSoon and EndingSoon before a reservation's window starts "
        "and ends.",
        json_schema_extra={"default": ReminderPolicy().to_wire()},
    )
    limits: Annotated[list[NamespaceLimit], Field(max_length=MAX_LIMITS)] | None = Field(
        default=None,
        description="Per-namespace limits (fair share): a reservation over one waits Pending "
        "(QuotaExceeded, OutsideAllowedHours) until it fits, or fails (QuotaExceeded) when it "
        "alone exceeds one.",
    )
    max_priority: Annotated[list[MaxPriority], Field(max_length=MAX_PRIORITY_RULES)] | None = (
        Field(
            default=None,
            description="Caps on the priority a namespace's reservations may use (absent: no "
            "cap). A namespace may use at most the highest value among the entries that "
            "select it (an entry without namespaceSelector selects every namespace); a "
            "namespace no entry selects is capped at 0. A higher PriorityClass value is "
            "lowered to the cap, and status says so.",
        )
    )
    preemption_grace_period: Duration | None = Field(
        default=None,
        description="How long an Active preemptible reservation keeps its resources after "
        "it is told it is preempted (PreemptionPending condition, Warning Event) before it "
        f"ends Failed/Preempted (absent: {DEFAULT_PREEMPTION_GRACE_PERIOD}).",
    )
    eviction_grace_period: Duration | None = Field(
        default=None,
        description="How long after a reservation with spec.onEnd: Evict ends (window over, "
        "Expired, Failed or deleted) its consumer Pods still bound to a Node are evicted "
        f"through the Eviction API (absent: {DEFAULT_EVICTION_GRACE_PERIOD}).",
    )

    @model_validator(mode="after")
    def _durations_in_order(self) -> Self:
        default = parse_duration(self.default_duration)
        if default <= 0:
            raise ValueError("policy.defaultDuration must be longer than zero")
        if self.max_duration is not None:
            limit = parse_duration(self.max_duration)
            if limit <= 0:
                raise ValueError("policy.maxDuration must be longer than zero")
            if default > limit:
                raise ValueError(
                    "policy.defaultDuration must not be longer than policy.maxDuration"
                )
        parse_duration(self.claim_timeout)
        if self.max_unclaimed_hold is not None:
            parse_duration(self.max_unclaimed_hold)
        if self.preemption_grace_period is not None:
            parse_duration(self.preemption_grace_period)
        if self.eviction_grace_period is not None:
            parse_duration(self.eviction_grace_period)
        return self


class MaintenanceWindow(WireModel):
    """A window in which ranks are out of use for everyone (``spec.maintenance[]``): nothing
    is granted into it whatever the priority, Active holders end at its start, and every
    reservation it keeps out says so by name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.ranks) && has(self.hostlist))",
                    "give ranks or hostlist, not both (neither: every rank)",
                ),
                _cel(
                    "has(self.end) != has(self.duration)",
                    "give end or duration, exactly one",
                ),
                _cel(
                    "!has(self.end) || !(" + _time_ok("self.start") + " && "
                    + _time_ok("self.end") + ") || timestamp(self.end) > timestamp(self.start)",
                    "end must be after start",
                    field_path=".end",
                ),
                _cel(
                    "!has(self.duration) || self.duration.matches('[1-9]')",
                    "duration must be longer than zero",
                    field_path=".duration",
                ),
                _cel(
                    "!has(self.duration) || !(" + _time_ok("self.start") + " && "
                    + _duration_ok("self.duration") + f") || timestamp(self.start) <= "
                    f"timestamp('{LAST_TIME}') - duration(self.duration)",
                    f"start plus duration must not end after {LAST_TIME}",
                    field_path=".duration",
                ),
            ]
        }
    )

    name: Annotated[
        str, StringConstraints(pattern=patterns.DNS_LABEL, min_length=1, max_length=MAX_NAME_LENGTH)
    ] = Field(description="Names the window in status, Events and messages.")
    ranks: NonEmptyParsedIdSet | None = Field(
        default=None, description="The ranks it takes out (an RFC 22 idset); or hostlist."
    )
    hostlist: HostList | None = Field(
        default=None,
        description="The hosts it takes out (an RFC 29 hostlist); or ranks. Neither: every rank.",
    )
    start: Timestamp = Field(description="When it starts (RFC 3339).")
    end: Timestamp | None = Field(default=None, description="When it ends; or give duration.")
    duration: Duration | None = Field(default=None, description="How long; or give end.")
    reason: str | None = Field(
        default=None, max_length=256, description="Why, for people (shown with its name)."
    )
    mode: MaintenanceMode = Field(
        default=MaintenanceMode.DRAIN,
        description="Drain: nothing new is granted into it and Active holders end at its "
        "start. Evict: the same, and overlapping Active holders are cut back at once.",
    )

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.ranks is not None and self.hostlist is not None:
            raise ValueError("give ranks or hostlist, not both (neither: every rank)")
        if (self.end is None) == (self.duration is None):
            raise ValueError("give end or duration, exactly one")
        start = parse_time(self.start)
        if self.end is not None and parse_time(self.end) <= start:
            raise ValueError("end must be after start")
        if self.duration is not None:
            length = parse_duration(self.duration)
            if length <= 0:
                raise ValueError("duration must be longer than zero")
            if start + length > parse_time(LAST_TIME):
                raise ValueError(f"start plus duration must not end after {LAST_TIME}")
        return self

    def window(self) -> tuple[float, float]:
        """Its ``[start, end)`` in epoch seconds."""
        start = parse_time(self.start)
        if self.end is not None:
            return start, parse_time(self.end)
        return start, start + parse_duration(self.duration or "0s")


class ResourcePoolSpec(WireModel):
    """What a platform team declares: the hardware (R v1) and who may reserve it, how."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.expiration) || !" + _time_ok("self.expiration")
                    + f" || timestamp(self.expiration) >= timestamp('{FIRST_TIME}')",
                    _EXPIRATION_BEFORE_EPOCH,
                    field_path=".expiration",
                )
            ]
        }
    )

    resources: Rv1 = Field(description="The pool's hardware in R version 1 (Flux RFC 20).")
    down: ParsedIdSet | None = Field(
        default=None, description="Ranks an administrator takes out of service (an RFC 22 idset)."
    )
    track_nodes: bool = Field(
        default=False,
        description="Mark a rank down while the Kubernetes Node of the same name is NotReady or cordoned.",
    )
    enforcement: Enforcement = Field(
        default=Enforcement.NONE,
        description="None: reservations are bookings only. Taint: while an exclusive "
        "reservation is Active, each Node it holds (the rank's host name is the Node name) "
        "carries the taint respool.io/reserved=<namespace>.<name>:NoSchedule and the label "
        "respool.io/reservation=<namespace>.<name>, removed when it ends.",
    )
    expiration: Timestamp | None = Field(
        default=None, description="Nothing is granted past this time (RFC 3339)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose reservations may use this pool (absent: all)."
    )
    policy: PoolPolicy = Field(
        default_factory=PoolPolicy,
        description="Defaults and limits for reservations.",
        # The full default, not {}: the API server checks a default against the CEL rules as
        # it stands, before the nested defaults would fill it in.
        json_schema_extra={"default": PoolPolicy().to_wire()},
    )
    maintenance: (
        Annotated[list[MaintenanceWindow], Field(max_length=MAX_MAINTENANCE_WINDOWS)] | None
    ) = Field(
        default=None,
        description="Maintenance windows: always win over reservations, whatever their "
        "priority.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _maintenance_names_unique(self) -> Self:
        seen: set[str] = set()
        for window in self.maintenance or []:
            if window.name in seen:
                raise ValueError(f"maintenance window {window.name!r} is named twice")
            seen.add(window.name)
        return self

    @model_validator(mode="after")
    def _times_parse(self) -> Self:
        if self.expiration is not None and parse_time(self.expiration) < 0:
            raise ValueError(_EXPIRATION_BEFORE_EPOCH)
        return self

    @model_validator(mode="after")
    def _one_host_per_rank(self) -> Self:
        # The engine names ranks without a host 'rank<N>'; in a pool that hides a typo, and
        # such ranks could never be matched by trackNodes or a hostlist constraint.
        execution = self.resources.execution
        if execution.nodelist:
            hosts = len(Hostlist(",".join(execution.nodelist)))
            ranks = IDset(",".join(entry.rank.strip("[]") for entry in execution.r_lite))
            if hosts != len(ranks):
                raise ValueError(
                    f"execution.nodelist names {hosts} hosts for {len(ranks)} ranks: give one "
                    "host name per rank, in rank order"
                )
        return self


class ResourceCapacity(StatusModel):
    """Counts of one resource type."""

    total: int = 0
    allocated: int = 0
    down: int = 0
    free: int = 0


class PoolCapacity(StatusModel):
    """Capacity per resource type: core, gpu and node (a node counts as allocated when anything
    on it is)."""

    core: ResourceCapacity | None = None
    gpu: ResourceCapacity | None = None
    node: ResourceCapacity | None = None


class PhaseCounts(StatusModel):
    """Number of the pool's reservations in each phase (keys are the phase names)."""

    pending: int | None = Field(default=None, alias="Pending")
    scheduled: int | None = Field(default=None, alias="Scheduled")
    active: int | None = Field(default=None, alias="Active")
    expired: int | None = Field(default=None, alias="Expired")
    failed: int | None = Field(default=None, alias="Failed")


class MaintenanceStatus(StatusModel):
    """A maintenance window as the operator applies it."""

    name: str | None = None
    ranks: str | None = Field(default=None, description="The ranks it covers (an idset).")
    start: str | None = Field(default=None, description="RFC 3339.")
    end: str | None = Field(default=None, description="RFC 3339.")
    mode: MaintenanceMode | None = None
    reason: str | None = Field(default=None, max_length=256)
    in_progress: bool | None = Field(default=None, description="Has it started?")


class NamespaceUsage(StatusModel):
    """What one namespace's reservations hold and book on a pool (the figures limits count)."""

    namespace: str = Field(max_length=MAX_NAME_LENGTH)
    nodes: int | None = Field(default=None, description="Nodes held now (Active windows).")
    cores: int | None = Field(default=None, description="Cores held now.")
    gpus: int | None = Field(default=None, description="GPUs held now.")
    node_hours_used: float | None = Field(
        default=None,
        description="Node-hours of the last 7 days, up to now (held and ended windows).",
    )
    node_hours_booked: float | None = Field(
        default=None, description="Node-hours from now on (the rest of held windows, and "
        "booked ones).",
    )


class ResourcePoolStatus(StatusModel):
    """Written only by the operator, through the status subresource."""

    observed_generation: int | None = None
    conditions: Conditions | None = None
    allocation_generation: int | None = Field(
        default=None, description="The engine's mutation counter."
    )
    down: str | None = Field(default=None, description="spec.down plus unhealthy nodes (an idset).")
    allocated: str | None = Field(
        default=None, description="Ranks with anything allocated now (an idset)."
    )
    summary: str | None = Field(default=None, description="The engine's dumps() of the pool.")
    capacity: PoolCapacity | None = None
    reservations: PhaseCounts | None = None
    usage: (
        Annotated[list[NamespaceUsage], Field(max_length=MAX_USAGE_ENTRIES)] | None
    ) = Field(
        default=None,
        description="Per namespace that holds or booked anything, or used the pool in the "
        "last 7 days: what policy.limits count.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["namespace"]},
    )
    maintenance: (
        Annotated[list[MaintenanceStatus], Field(max_length=MAX_MAINTENANCE_WINDOWS)] | None
    ) = Field(default=None, description="The maintenance windows that have not ended, by start.")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)


class ResourcePool(WireModel):
    """A cluster-scoped set of ranks (nodes) with cores and GPUs that reservations draw from."""

    model_config = ConfigDict(extra="ignore")
    KIND: ClassVar[str] = "ResourcePool"
    PLURAL: ClassVar[str] = "resourcepools"

    api_version: Literal["respool.io/v1alpha1"] = "respool.io/v1alpha1"
    kind: Literal["ResourcePool"] = "ResourcePool"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ResourcePoolSpec
    status: ResourcePoolStatus | None = None


# ---------------------------------------------------------------------------------------------
# ResourceReservation


class ReservationRequest(WireModel):
    """The shorthand request, read the way ``flux run -N -n -c -g --exclusive`` is read."""

    nodes: Count | None = Field(default=None, description="Number of nodes (absent: any).")
    slots: Count = Field(
        default=1, description="Slots per node when nodes is set, in total otherwise."
    )
    cores_per_slot: Count = Field(default=1, description="Cores in each slot.")
    gpus_per_slot: Annotated[int, Field(ge=0, le=MAX_COUNT)] = Field(
        default=0, description="GPUs in each slot."
    )
    exclusive: bool = Field(
        default=False,
        description="Whole nodes (Flux node-exclusive allocation); not the same as mode.",
    )


_VERTEX_RULES: list[JsonValue] = [
    _cel(
        "self.type != 'node' || (has(self.with) && size(self.with) == 1 && self.with[0].type == 'slot')",
        "a node vertex must contain exactly one slot vertex (jobspec v1, RFC 25)",
    ),
    _cel(
        "self.type != 'slot' || (has(self.with) && self.with.exists_one(v, v.type == 'core') "
        "&& self.with.all(v, v.type == 'core' || v.type == 'gpu') && size(self.with) <= 2 "
        "&& self.with.all(v, !has(v.with) || size(v.with) == 0))",
        "a slot vertex must contain one core vertex and at most one gpu vertex, and nothing "
        "below them (jobspec v1, RFC 25)",
    ),
    _cel(
        "!(self.type == 'core' || self.type == 'gpu') || !has(self.exclusive)",
        "only node and slot vertices may set exclusive",
    ),
]


class JobspecVertex(WireModel):
    """A jobspec v1 resource vertex (RFC 14/25): node > slot > core[, gpu], or slot > core[, gpu]."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _VERTEX_RULES})

    type: Literal["node", "slot", "core", "gpu"]
    count: Count
    with_: Annotated[list[JobspecVertex], Field(min_length=1, max_length=2)] | None = Field(
        default=None, alias="with", description="The vertices this one contains."
    )
    label: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=63)] | None = (
        None
    )
    exclusive: bool | None = Field(
        default=None, description="On node (or slot): the whole node is granted."
    )


def _check_jobspec(vertices: list[JobspecVertex]) -> None:
    """The RFC 25 shapes: node>slot>core[,gpu] or slot>core[,gpu] (mirrors the CEL rules)."""
    if len(vertices) != 1:
        raise ValueError(
            "spec.resources must hold exactly one top-level vertex (node or slot), as jobspec v1 requires"
        )
    top = vertices[0]
    if top.type not in ("node", "slot"):
        raise ValueError("the top-level vertex of spec.resources must be a node or a slot")

    def check(vertex: JobspecVertex) -> None:
        children = vertex.with_ or []
        if vertex.type == "node":
            if len(children) != 1 or children[0].type != "slot":
                raise ValueError(
                    "a node vertex must contain exactly one slot vertex (jobspec v1, RFC 25)"
                )
        elif vertex.type == "slot":
            kinds = [child.type for child in children]
            if kinds.count("core") != 1 or kinds.count("gpu") > 1 or set(kinds) - {"core", "gpu"}:
                raise ValueError(
                    "a slot vertex must contain one core vertex and at most one gpu vertex, and "
                    "nothing below them (jobspec v1, RFC 25)"
                )
        else:
            if children:
                raise ValueError(
                    "a slot vertex must contain one core vertex and at most one gpu vertex, and "
                    "nothing below them (jobspec v1, RFC 25)"
                )
            if vertex.exclusive is not None:
                raise ValueError("only node and slot vertices may set exclusive")
        for child in children:
            check(child)

    check(top)


class Constraint(WireModel):
    """An RFC 31 constraint. Several operators in one object must all hold (RFC 31)."""

    properties: (
        Annotated[list[PropertyMatch], Field(max_length=MAX_CONSTRAINT_PROPERTIES)] | None
    ) = Field(default=None, description="Every listed property is required; '^name' excludes it.")
    hostlist: (
        Annotated[list[ConstraintHostList], Field(max_length=MAX_CONSTRAINT_HOSTLISTS)] | None
    ) = Field(
        default=None, description="The rank's host name is in one of these hostlists."
    )
    ranks: ParsedIdSet | None = Field(default=None, description="The rank is in this idset.")
    and_: Annotated[list[Constraint], Field(max_length=MAX_CONSTRAINT_ITEMS)] | None = Field(
        default=None, alias="and", description="All of these hold."
    )
    or_: Annotated[list[Constraint], Field(max_length=MAX_CONSTRAINT_ITEMS)] | None = Field(
        default=None, alias="or", description="Any of these holds."
    )
    not_: Annotated[list[Constraint], Field(max_length=MAX_CONSTRAINT_ITEMS)] | None = Field(
        default=None, alias="not", description="Not all of these hold."
    )

    def depth(self) -> int:
        nested = [c for group in (self.and_, self.or_, self.not_) if group for c in group]
        return 1 + max((c.depth() for c in nested), default=0)

    def to_rfc31(self) -> dict[str, Any]:
        """The constraint as the engine takes it (RFC 31 keys, nothing unset)."""
        return self.to_wire()


def _constraint_sum(var: str, per_object: str, levels: int = CONSTRAINT_MAX_DEPTH) -> str:
    """A CEL expression adding ``per_object`` (written with ``{c}`` for the object) over the
    constraint object ``var`` and every object nested in it (the schema unrolls the tree to
    ``levels`` levels)."""
    expr = per_object.format(c=var)
    if levels > 1:
        child = f"c{levels}"
        for operator in ("and", "or", "not"):
            expr += (f" + (has({var}.{operator}) ? {var}.{operator}.map({child}, "
                     f"{_constraint_sum(child, per_object, levels - 1)}).sum() : 0)")
    return f"({expr})"


_CONSTRAINT_TERMS_CEL = ("(has({c}.properties) ? size({c}.properties) : 0) + "
                         "(has({c}.hostlist) ? size({c}.hostlist) : 0) + "
                         "(has({c}.ranks) ? 1 : 0)")
_TOO_MANY_CONSTRAINT_NODES = (
    f"spec.constraints may hold at most {MAX_CONSTRAINT_NODES} constraint objects, nested "
    "ones included")
_TOO_MANY_CONSTRAINT_TERMS = (
    f"spec.constraints may list at most {MAX_CONSTRAINT_TERMS} properties, hostlists and ranks "
    "entries in all")


def constraint_cost(constraints: Any) -> tuple[int, int, int]:
    """(objects, terms, host names) of a constraint tree as received, counted without expanding
    anything and without recursion; the count stops early once any budget is exceeded, and
    what is not shaped like a constraint is left for validation to name."""
    objects = terms = hosts = 0
    stack = [constraints]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        objects += 1
        properties = node.get("properties")
        if isinstance(properties, list):
            terms += len(properties)
        hostlists = node.get("hostlist")
        if isinstance(hostlists, list):
            terms += len(hostlists)
            for text in hostlists:
                if isinstance(text, str) and hosts <= MAX_CONSTRAINT_HOSTS:
                    with contextlib.suppress(ValueError):  # validation names what is wrong
                        hosts += hostlist_size(text)
        if "ranks" in node:
            terms += 1
        if (objects > MAX_CONSTRAINT_NODES or terms > MAX_CONSTRAINT_TERMS
                or hosts > MAX_CONSTRAINT_HOSTS):
            break
        for operator in ("and", "or", "not"):
            nested = node.get(operator)
            if isinstance(nested, list):
                stack.extend(nested)
    return objects, terms, hosts


def json_depth(value: Any, limit: int) -> int:
    """How deep `value` nests dicts and lists (a scalar: 0), counted without recursion and
    only up to `limit` + 1 (past that, how much deeper does not matter)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return deepest


def check_constraint_budget(constraints: Any) -> None:
    """ValueError when a constraint tree costs more than one reservation may (see
    MAX_CONSTRAINT_NODES and the bounds beside it)."""
    objects, terms, hosts = constraint_cost(constraints)
    if objects > MAX_CONSTRAINT_NODES:
        raise ValueError(_TOO_MANY_CONSTRAINT_NODES)
    if terms > MAX_CONSTRAINT_TERMS:
        raise ValueError(_TOO_MANY_CONSTRAINT_TERMS)
    if hosts > MAX_CONSTRAINT_HOSTS:
        raise ValueError(
            f"the hostlists of spec.constraints name more than {MAX_CONSTRAINT_HOSTS} host "
            "names in all; select that many hosts with ranks or properties instead")


class ResourceReservationSpec(WireModel):
    """What a user asks for: resources from a pool, for a window, under a claim policy."""

    pool: Annotated[
        str, StringConstraints(pattern=patterns.DNS_LABEL, min_length=1, max_length=MAX_NAME_LENGTH)
    ] = Field(description="The ResourcePool to reserve from.")
    mode: Mode = Field(
        default=Mode.EXCLUSIVE,
        description="exclusive: nobody else uses the granted resources in the window; shared: "
        "other shared reservations may.",
    )
    request: ReservationRequest | None = Field(
        default=None,
        description="Shorthand request. Give request or resources, not both; neither means one "
        "slot of one core.",
    )
    resources: Annotated[list[JobspecVertex], Field(min_length=1, max_length=1)] | None = Field(
        default=None,
        description="Jobspec v1 resource vertices (RFC 14/25), instead of request.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self[0].type == 'node' || self[0].type == 'slot'",
                    "the top-level vertex of spec.resources must be a node or a slot",
                )
            ]
        },
    )
    constraints: Constraint | None = Field(
        default=None, description="RFC 31 constraints on the ranks that may be granted."
    )
    start_time: Timestamp | None = Field(
        default=None, description="Start of the window (absent: now)."
    )
    end_time: Timestamp | None = Field(
        default=None, description="End of the window; or give duration."
    )
    duration: Duration | None = Field(
        default=None,
        description="Length of the window; or give endTime (absent: the pool's defaultDuration).",
    )
    next_available: bool = Field(
        default=True,
        description="If the window asked for is not free, book the earliest one that is "
        "(false: only the window asked for).",
    )
    max_retry: Annotated[int, Field(ge=0, le=MAX_RETRY)] = Field(
        default=5,
        description="Failed attempts allowed before the reservation fails (RetryExceeded).",
    )
    max_wait: Duration | None = Field(
        default=None,
        description="Give up (MaxWaitExceeded) if not granted, or booked to start, this long "
        "after the first request (absent: wait indefinitely).",
    )
    claim_policy: ClaimPolicy = Field(
        default=ClaimPolicy.AUTO,
        description="Auto: claimed when the window starts. Manual: the holder sets claimed: true.",
    )
    claimed: bool = Field(default=False, description="Set by the holder under claimPolicy Manual.")
    config: dict[str, Any] | None = Field(
        default=None, description="Free-form; echoed to status.config once claimed."
    )
    priority_class_name: Annotated[
        str, StringConstraints(pattern=patterns.DNS_SUBDOMAIN, min_length=1, max_length=253)
    ] | None = Field(
        default=None,
        description="A scheduling.k8s.io/v1 PriorityClass; its value is this reservation's "
        "priority (absent: the globalDefault class, else 0). Waiting reservations are decided "
        "in priority order; a higher one may displace lower ones (see preemptible).",
    )
    preemptible: bool = Field(
        default=False,
        description="Once Active, may a reservation of higher priority end it (after the "
        "pool's policy.preemptionGracePeriod, as Failed/Preempted)? Scheduled windows of "
        "lower priority are always re-planned when needed.",
    )
    on_end: OnEnd = Field(
        default=OnEnd.LEAVE,
        description="What happens to the consumer Pods (labelled respool.io/reservation: "
        "<name>) when the reservation ends: Leave them running, or Evict those still bound "
        "to a Node after the pool's policy.evictionGracePeriod (Eviction API: "
        "PodDisruptionBudgets are respected).",
    )
    idle_timeout: Duration | None = Field(
        default=None,
        description="An Active reservation with no consumer Pod for this long is released "
        "early (Expired, reason Idle). The idle clock starts when it becomes Active or its "
        "last consumer finishes, and again when the operator restarts (absent: never).",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.request) && has(self.resources))",
                    "give spec.request or spec.resources, not both",
                ),
                _cel(
                    "!(has(self.endTime) && has(self.duration))",
                    "give spec.endTime or spec.duration, not both",
                ),
                _cel(
                    "!has(self.startTime) || !has(self.endTime) || !("
                    + _time_ok("self.startTime")
                    + " && "
                    + _time_ok("self.endTime")
                    + ") || timestamp(self.endTime) > timestamp(self.startTime)",
                    "spec.endTime must be after spec.startTime",
                    field_path=".endTime",
                ),
                _cel(
                    "!has(self.duration) || self.duration.matches('[1-9]')",
                    "spec.duration must be longer than zero",
                    field_path=".duration",
                ),
                _cel(
                    "!has(self.idleTimeout) || self.idleTimeout.matches('[1-9]')",
                    "spec.idleTimeout must be longer than zero",
                    field_path=".idleTimeout",
                ),
                _cel(
                    "!has(self.startTime) || !has(self.duration) || !("
                    + _time_ok("self.startTime")
                    + " && "
                    + _duration_ok("self.duration")
                    + f") || timestamp(self.startTime) <= timestamp('{LAST_TIME}') "
                    "- duration(self.duration)",
                    _WINDOW_PAST_LAST_TIME,
                    field_path=".duration",
                ),
                _cel(
                    "!has(self.constraints) || "
                    + _constraint_sum("self.constraints", "1")
                    + f" <= {MAX_CONSTRAINT_NODES}",
                    _TOO_MANY_CONSTRAINT_NODES,
                    field_path=".constraints",
                ),
                _cel(
                    "!has(self.constraints) || "
                    + _constraint_sum("self.constraints", _CONSTRAINT_TERMS_CEL)
                    + f" <= {MAX_CONSTRAINT_TERMS}",
                    _TOO_MANY_CONSTRAINT_TERMS,
                    field_path=".constraints",
                ),
            ]
        }
    )

    @model_validator(mode="before")
    @classmethod
    def _within_budget(cls, data: Any) -> Any:
        # Before any field is validated: a hostile tree is refused for what it would cost,
        # without paying that cost first.
        if isinstance(data, dict) and "constraints" in data:
            check_constraint_budget(data["constraints"])
        if isinstance(data, dict) and "config" in data:
            depth = json_depth(data["config"], MAX_CONFIG_DEPTH)
            if depth > MAX_CONFIG_DEPTH:
                raise ValueError(f"spec.config nests objects and arrays more than "
                                 f"{MAX_CONFIG_DEPTH} levels deep")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.request is not None and self.resources is not None:
            raise ValueError("give spec.request or spec.resources, not both")
        if self.end_time is not None and self.duration is not None:
            raise ValueError("give spec.endTime or spec.duration, not both")
        start = parse_time(self.start_time) if self.start_time is not None else None
        end = parse_time(self.end_time) if self.end_time is not None else None
        if start is not None and end is not None and end <= start:
            raise ValueError("spec.endTime must be after spec.startTime")
        if self.duration is not None and parse_duration(self.duration) <= 0:
            raise ValueError("spec.duration must be longer than zero")
        if (
            start is not None
            and self.duration is not None
            and start + parse_duration(self.duration) > parse_time(LAST_TIME)
        ):
            raise ValueError(_WINDOW_PAST_LAST_TIME)
        if self.max_wait is not None:
            parse_duration(self.max_wait)
        if self.idle_timeout is not None and parse_duration(self.idle_timeout) <= 0:
            raise ValueError("spec.idleTimeout must be longer than zero")
        if self.config is not None:
            size = len(json.dumps(self.config, separators=(",", ":")))
            if size > MAX_CONFIG_BYTES:
                raise ValueError(
                    f"spec.config is {size} bytes of JSON; at most {MAX_CONFIG_BYTES} (it is "
                    "echoed to status.config, and the object must fit in etcd)"
                )
        if self.resources is not None:
            _check_jobspec(self.resources)
        if self.constraints is not None and self.constraints.depth() > CONSTRAINT_MAX_DEPTH:
            raise ValueError(
                f"spec.constraints may nest and/or/not at most {CONSTRAINT_MAX_DEPTH - 1} levels deep"
            )
        return self

    def effective_request(self) -> ReservationRequest | None:
        """The shorthand request, with the documented default (one slot of one core) when
        neither request nor resources is given; None when resources is given."""
        if self.resources is not None:
            return None
        return self.request if self.request is not None else ReservationRequest()


class Allocated(StatusModel):
    """What a reservation holds (Active) or is promised for its window (Scheduled)."""

    ranks: str | None = Field(default=None, description="Ranks granted (an idset).")
    nodelist: str | None = Field(default=None, description="Host names granted (a hostlist).")
    summary: str | None = Field(default=None, description="The grant in dumps() form.")
    r: Rv1 | None = Field(default=None, alias="R", description="The granted R version 1.")
    mode: Mode | None = Field(
        default=None,
        description="The mode booked (a restore uses it; spec.mode may have changed since).",
    )


class NextAvailable(StatusModel):
    """The planner's answer for the requested window."""

    available: bool | None = Field(default=None, description="Is the window asked for free?")
    avail_start: str | None = Field(
        default=None, description="Earliest start that fits (RFC 3339)."
    )
    avail_end: str | None = Field(default=None, description="End of that window (RFC 3339).")


class Consumers(StatusModel):
    """The Pods using a reservation: in its namespace, labelled respool.io/reservation:
    <name>, not finished (Pending - gated or not yet scheduled - or Running)."""

    count: int | None = Field(default=None, description="How many such Pods there are.")
    running: int | None = Field(default=None, description="How many of them are Running.")
    pods: Annotated[list[str], Field(max_length=MAX_CONSUMERS_LISTED)] | None = Field(
        default=None,
        description=f"The first {MAX_CONSUMERS_LISTED} of their names, sorted (count says "
        "how many there are in all).",
    )
    idle_since: str | None = Field(
        default=None,
        description="Active with spec.idleTimeout and no consumer: since when the idle clock "
        "runs (RFC 3339); the reservation is released at idleSince + idleTimeout.",
    )


class ResourceReservationStatus(StatusModel):
    """Written only by the operator, through the status subresource."""

    phase: Phase | None = None
    pre_reservation_id: str | None = Field(default=None, max_length=253)
    pre_reservation_expires: str | None = Field(
        default=None, description="Claim deadline of the pre-reservation (RFC 3339)."
    )
    reservation_id: str | None = Field(default=None, max_length=253)
    start_time: str | None = None
    end_time: str | None = None
    first_request_time: str | None = None
    retry_count: int | None = None
    allocated: Allocated | None = None
    next_available: NextAvailable | None = None
    config: dict[str, Any] | None = None
    unclaimed_since: str | None = Field(
        default=None,
        description="Manual: start of the first window this reservation held and missed the "
        "claim of, while it keeps re-holding (RFC 3339); cleared once claimed.",
    )
    queue_position: int | None = Field(
        default=None,
        ge=1,
        description="Pending, waiting for capacity: its place in the pool's queue, in the "
        "order the operator tries waiting reservations when capacity frees (1 = next).",
    )
    start_no_later_than: str | None = Field(
        default=None,
        description="Pending, waiting for capacity: the start the planner projects if nothing "
        "changes but time (every held window runs to its end, nothing new is booked, the "
        "queue is served in order), RFC 3339; absent where the planner cannot bound it.",
    )
    priority: int | None = Field(
        default=None,
        description="The priority it is decided with: its PriorityClass's value, capped by the "
        "pool's policy.maxPriority.",
    )
    consumers: Consumers | None = Field(
        default=None,
        description="The Pods using this reservation (kept while the operator watches Pods: "
        "respool run --webhook-port); absent when there are none.",
    )
    displaced_by: Annotated[list[Annotated[str, Field(max_length=128)]],
                            Field(max_length=MAX_DISPLACED_BY)] | None = Field(
        default=None,
        description="The UIDs of the reservations that displaced this one (preemption): it "
        "never displaces them in turn, also after a restart (no cascades). The Replanned "
        "condition and Events name them.",
    )
    booking_seal: str | None = Field(
        default=None,
        pattern=patterns.BOOKING_SEAL,
        description="Active or Scheduled: the operator's HMAC-SHA256 over the booking this "
        "status describes (the reservation's and pool's UIDs, phase, ID, allocated.R, window, "
        "mode), under a key only the operator holds. After a restart only a booking whose "
        "seal checks out is restored; anything else is planned anew, with a Warning Event.",
    )
    conditions: Conditions | None = None
    observed_generation: int | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)


class ResourceReservation(WireModel):
    """A namespaced claim on part of a ResourcePool for a time window."""

    model_config = ConfigDict(extra="ignore")
    KIND: ClassVar[str] = "ResourceReservation"
    PLURAL: ClassVar[str] = "resourcereservations"

    api_version: Literal["respool.io/v1alpha1"] = "respool.io/v1alpha1"
    kind: Literal["ResourceReservation"] = "ResourceReservation"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ResourceReservationSpec
    status: ResourceReservationStatus | None = None


# -- ResourceReservationSchedule (issue 15) --------------------------------------------------

#: The longest a schedule may book ahead (leadTime) and how many occurrences its status lists.
MAX_LEAD_TIME = "720h"
MAX_UPCOMING = 20
MAX_UNBOOKED = 20


class ResourceReservationScheduleSpec(WireModel):
    """Recurring reservations, like a CronJob: at each time `schedule` names (in `timeZone`),
    a window of `duration`, booked `leadTime` ahead as an ordinary ResourceReservation."""

    schedule: str = Field(
        min_length=1,
        max_length=256,
        description="When each window starts, in cron syntax ('0 2 * * *': 02:00 every day; "
        "also @daily, @hourly, @weekly, @monthly, @yearly), read in timeZone.",
    )
    time_zone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="An IANA time zone ('Europe/Berlin'); the schedule follows its daylight "
        "saving changes.",
    )
    duration: Duration = Field(description="Length of each window.")
    lead_time: Duration = Field(
        default="24h",
        description="How far ahead each occurrence's reservation is created (at most "
        f"{MAX_LEAD_TIME}).",
    )
    suspend: bool = Field(
        default=False,
        description="Create no new reservations (those created stay).",
    )
    successful_history_limit: int = Field(
        default=3, ge=0, le=100,
        description="Ended reservations (Expired) kept; older ones are deleted.",
    )
    failed_history_limit: int = Field(
        default=1, ge=0, le=100,
        description="Failed reservations kept; older ones are deleted.",
    )
    template: ResourceReservationSpec = Field(
        description="The reservation to create for each occurrence; startTime, endTime and "
        "duration come from the schedule.",
    )


class ScheduledOccurrence(StatusModel):
    start_time: str | None = Field(default=None, description="Start of the window (RFC 3339).")
    reservation: str | None = Field(default=None, description="The reservation's name.")
    phase: Phase | None = None


class UnbookedOccurrence(StatusModel):
    start_time: str | None = Field(default=None, description="Start of the window (RFC 3339).")
    reservation: str | None = None
    reason: str | None = Field(default=None, max_length=128)
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)


class ResourceReservationScheduleStatus(StatusModel):
    """Written only by the operator, through the status subresource."""

    upcoming: list[ScheduledOccurrence] | None = Field(
        default=None, max_length=MAX_UPCOMING,
        description="The next occurrences and their reservations (created within leadTime).",
    )
    last_schedule_time: str | None = Field(
        default=None, description="Start of the latest occurrence whose reservation was "
        "created (RFC 3339).",
    )
    unbooked: list[UnbookedOccurrence] | None = Field(
        default=None, max_length=MAX_UNBOOKED,
        description="Recent occurrences that could not be booked, with the reason.",
    )
    conditions: Conditions | None = None
    observed_generation: int | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)

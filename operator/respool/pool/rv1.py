"""R version 1 (RFC 20): parsing, encoding and the read-only ``ResourceSet`` view.

Parsing validates everything and names the offending part in its ``ValueError``; sizes are
checked against ``limits`` on the compressed idsets before any per-rank table is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .hostlist import Hostlist, encode_hostnames
from .idset import IDset
from .limits import MAX_CORE_ID, MAX_GPU_ID, MAX_PROPERTIES, MAX_RANKS

#: Characters RFC 20 forbids in property names.
_PROPERTY_FORBIDDEN = frozenset("!&'\"^`|()")


def check_property_name(name: object, where: str) -> str:
    if not isinstance(name, str) or name == "":
        raise ValueError(f"{where}: property name must be a non-empty string, got {name!r}")
    bad = sorted(set(name) & _PROPERTY_FORBIDDEN)
    if bad or any(ch.isspace() for ch in name):
        raise ValueError(f"{where}: invalid property name {name!r}")
    return name


def _time_value(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number of epoch seconds, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{where} must be a finite non-negative number, got {value!r}")
    return result


def _idset_field(value: object, where: str) -> IDset:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected an idset string, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{where}: negative ID {value}")
        return IDset(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an idset string, got {value!r}")
    try:
        return IDset(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _mask_field(value: object, where: str, limit: int) -> int:
    ids = _idset_field(value, where)
    if ids and ids.last() > limit:
        raise ValueError(f"{where}: ID {ids.last()} exceeds the maximum {limit}")
    return ids.to_mask(limit)


def load_json_mapping(data: object, what: str) -> Mapping[str, Any]:
    """Accept a mapping or a JSON text of one; anything else is a ``ValueError``."""
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8", errors="replace")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: invalid JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass
class Rv1:
    """A parsed R v1: per-rank core/GPU bitmasks plus the execution metadata."""

    ranks: list[int] = field(default_factory=list)  # ascending
    cores: dict[int, int] = field(default_factory=dict)
    gpus: dict[int, int] = field(default_factory=dict)
    hostnames: dict[int, str] = field(default_factory=dict)  # only ranks the nodelist named
    has_nodelist: bool = False
    properties: dict[str, IDset] = field(default_factory=dict)
    starttime: float = 0.0
    expiration: float = 0.0
    nslots: int = 0
    scheduling: dict[str, Any] | None = None

    def hostname(self, rank: int) -> str:
        return self.hostnames.get(rank) or f"rank{rank}"


def parse_rv1(data: object, what: str = "R") -> Rv1:
    """Parse and validate an R v1 dict or JSON text."""
    R = load_json_mapping(data, what)
    if "version" not in R:
        raise ValueError(f"{what}: missing 'version'")
    version = R["version"]
    if isinstance(version, bool) or version != 1:
        raise ValueError(f"{what}: unsupported version {version!r} (only 1)")
    execution = R.get("execution")
    if not isinstance(execution, Mapping):
        raise ValueError(f"{what}: 'execution' must be an object")
    r_lite = execution.get("R_lite")
    if not isinstance(r_lite, list):
        raise ValueError(f"{what}: execution.R_lite must be a list")
    result = Rv1()
    total = 0
    for index, entry in enumerate(r_lite):
        where = f"{what}: execution.R_lite[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be an object")
        if "rank" not in entry:
            raise ValueError(f"{where}: missing 'rank'")
        ranks = _idset_field(entry["rank"], f"{where}.rank")
        total += len(ranks)
        if total > MAX_RANKS:
            raise ValueError(f"{what}: more than {MAX_RANKS} ranks")
        children = entry.get("children")
        if not isinstance(children, Mapping):
            raise ValueError(f"{where}.children must be an object")
        if "core" not in children:
            raise ValueError(f"{where}.children: missing 'core'")
        core_mask = _mask_field(children["core"], f"{where}.children.core", MAX_CORE_ID)
        gpu_mask = 0
        if "gpu" in children:
            gpu_mask = _mask_field(children["gpu"], f"{where}.children.gpu", MAX_GPU_ID)
        for rank in ranks:
            if rank in result.cores:
                raise ValueError(f"{where}.rank: rank {rank} appears more than once")
            result.cores[rank] = core_mask
            result.gpus[rank] = gpu_mask
    result.ranks = sorted(result.cores)

    if "nodelist" in execution:
        nodelist = execution["nodelist"]
        if isinstance(nodelist, str):
            nodelist = [nodelist]
        if not isinstance(nodelist, list) or not all(isinstance(h, str) for h in nodelist):
            raise ValueError(f"{what}: execution.nodelist must be a list of hostlist strings")
        try:
            hosts = Hostlist(nodelist)
        except ValueError as err:
            raise ValueError(f"{what}: execution.nodelist: {err}") from None
        if len(hosts) > len(result.ranks):
            raise ValueError(
                f"{what}: execution.nodelist names {len(hosts)} hosts for {len(result.ranks)} ranks"
            )
        result.hostnames = dict(zip(result.ranks, hosts, strict=False))
        result.has_nodelist = True

    properties = execution.get("properties")
    if properties is not None:
        if not isinstance(properties, Mapping):
            raise ValueError(f"{what}: execution.properties must be an object")
        if len(properties) > MAX_PROPERTIES:
            raise ValueError(f"{what}: more than {MAX_PROPERTIES} properties")
        all_ranks = IDset(result.ranks)
        for name, ranks_text in properties.items():
            where = f"{what}: execution.properties[{name!r}]"
            check_property_name(name, where)
            prop_ranks = _idset_field(ranks_text, where)
            outside = prop_ranks - all_ranks
            if outside:
                raise ValueError(f"{where}: ranks {outside} are not in R_lite")
            if prop_ranks:
                result.properties[name] = prop_ranks

    for key in ("starttime", "expiration"):
        if key in execution and execution[key] is not None:
            setattr(result, key, _time_value(execution[key], f"{what}: execution.{key}"))
    if result.starttime and result.expiration and result.expiration <= result.starttime:
        raise ValueError(
            f"{what}: execution.expiration {result.expiration} is not after "
            f"starttime {result.starttime}"
        )
    if "nslots" in execution and execution["nslots"] is not None:
        nslots = execution["nslots"]
        if isinstance(nslots, bool) or not isinstance(nslots, int) or nslots < 0:
            raise ValueError(f"{what}: execution.nslots must be a positive integer")
        result.nslots = nslots

    scheduling = R.get("scheduling")
    if scheduling is not None:
        if not isinstance(scheduling, Mapping):
            raise ValueError(f"{what}: 'scheduling' must be an object")
        result.scheduling = json.loads(json.dumps(scheduling))
    return result


# -- encoding ------------------------------------------------------------------------

_ID_TEXT_CACHE: dict[int, str] = {}


def _mask_text(mask: int, brackets: bool) -> str:
    key = mask * 2 + (1 if brackets else 0)
    text = _ID_TEXT_CACHE.get(key)
    if text is None:
        text = IDset.from_mask(mask).encode(brackets=brackets)
        if len(_ID_TEXT_CACHE) > 4096:
            _ID_TEXT_CACHE.clear()
        _ID_TEXT_CACHE[key] = text
    return text


def group_ranks(
    ranks: Iterable[int], cores: Mapping[int, int], gpus: Mapping[int, int]
) -> list[tuple[IDset, int, int]]:
    """Ranks with identical core and GPU sets, grouped, ordered by lowest rank."""
    groups: dict[tuple[int, int], list[int]] = {}
    for rank in ranks:
        groups.setdefault((cores[rank], gpus[rank]), []).append(rank)
    return [(IDset(members), core, gpu) for (core, gpu), members in groups.items()]


def dumps_groups(groups: list[tuple[IDset, int, int]]) -> str:
    parts: list[str] = []
    for ranks, core, gpu in sorted(groups, key=lambda g: g[0].first()):
        children = []
        if core or not gpu:
            children.append(f"core{_mask_text(core, True)}")
        if gpu:
            children.append(f"gpu{_mask_text(gpu, True)}")
        parts.append(f"rank{ranks.encode(brackets=True)}/{','.join(children)}")
    return " ".join(parts)


def encode_rv1(
    ranks: list[int],
    cores: Mapping[int, int],
    gpus: Mapping[int, int],
    *,
    hostnames: list[str] | None,
    properties: Mapping[str, IDset],
    starttime: float,
    expiration: float,
    nslots: int,
    scheduling: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The R v1 dict, in the key order of Flux's Rv1Set encoder."""
    groups = sorted(group_ranks(ranks, cores, gpus), key=lambda g: g[0].first())
    r_lite: list[dict[str, Any]] = []
    for group_ranks_, core, gpu in groups:
        children: dict[str, str] = {"core": _mask_text(core, False)}
        if gpu:
            children["gpu"] = _mask_text(gpu, False)
        r_lite.append({"rank": group_ranks_.encode(), "children": children})
    execution: dict[str, Any] = {
        "R_lite": r_lite,
        "starttime": float(starttime),
        "expiration": float(expiration),
    }
    if nslots > 0:
        execution["nslots"] = nslots
    if hostnames is not None:
        execution["nodelist"] = [encode_hostnames(hostnames)] if hostnames else []
    props = {name: str(ids) for name, ids in sorted(properties.items()) if ids}
    if props:
        execution["properties"] = props
    result: dict[str, Any] = {"version": 1, "execution": execution}
    if scheduling:
        result["scheduling"] = json.loads(json.dumps(scheduling))
    return result


class ResourceSet:
    """A read-only R v1 resource set (what ``copy_allocated`` and friends return)."""

    __slots__ = ("_rv1",)

    def __init__(self, R: object = None) -> None:
        if R is None:
            self._rv1 = Rv1()
        elif isinstance(R, ResourceSet):
            self._rv1 = R._rv1
        elif isinstance(R, Rv1):
            self._rv1 = R
        else:
            to_dict = getattr(R, "to_dict", None)
            if callable(to_dict) and not isinstance(R, Mapping):
                R = to_dict()
            self._rv1 = parse_rv1(R)

    @property
    def ranks(self) -> IDset:
        return IDset(self._rv1.ranks)

    @property
    def nodelist(self) -> Hostlist:
        return Hostlist([self._rv1.hostname(rank) for rank in self._rv1.ranks])

    @property
    def nnodes(self) -> int:
        return len(self._rv1.ranks)

    @property
    def ncores(self) -> int:
        return sum(mask.bit_count() for mask in self._rv1.cores.values())

    @property
    def ngpus(self) -> int:
        return sum(mask.bit_count() for mask in self._rv1.gpus.values())

    def count(self, kind: str) -> int:
        if kind in ("node", "rank"):
            return self.nnodes
        if kind == "core":
            return self.ncores
        if kind == "gpu":
            return self.ngpus
        raise ValueError(f"unknown resource type {kind!r}")

    def cores(self, rank: int) -> IDset:
        return IDset.from_mask(self._rv1.cores.get(rank, 0))

    def gpus(self, rank: int) -> IDset:
        return IDset.from_mask(self._rv1.gpus.get(rank, 0))

    @property
    def properties(self) -> dict[str, IDset]:
        return dict(self._rv1.properties)

    @property
    def starttime(self) -> float:
        return self._rv1.starttime

    @property
    def expiration(self) -> float:
        return self._rv1.expiration

    @property
    def nslots(self) -> int:
        return self._rv1.nslots

    def dumps(self) -> str:
        rv1 = self._rv1
        return dumps_groups(group_ranks(rv1.ranks, rv1.cores, rv1.gpus))

    def to_dict(self) -> dict[str, Any]:
        rv1 = self._rv1
        return encode_rv1(
            rv1.ranks,
            rv1.cores,
            rv1.gpus,
            hostnames=[rv1.hostname(r) for r in rv1.ranks] if rv1.has_nodelist else None,
            properties=rv1.properties,
            starttime=rv1.starttime,
            expiration=rv1.expiration,
            nslots=rv1.nslots,
            scheduling=rv1.scheduling,
        )

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self) -> str:
        return self.dumps()

    def __repr__(self) -> str:
        return f"ResourceSet({self.dumps()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResourceSet):
            return self.to_dict() == other.to_dict()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

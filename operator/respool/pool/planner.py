"""The time planner: bookings of concrete resource sets over ``[start, end)`` windows.

The planner owns a ``ResourcePool`` for topology and down state and never allocates on it.
A query for a window gathers the bookings that overlap it (through a time index, so a
"now" query does not scan every booking), overlays what they hold on the pool's per-rank
totals and runs the pool's own selection (worst-fit, ties to the lowest rank, lowest free
IDs) over what is free throughout the window for the requested mode:

* ``exclusive``: free of every overlapping booking;
* ``shared``: free of every overlapping *exclusive* booking.

Everything is deterministic: the same bookings (in any insertion order) give the same
answers, so the operator can rebuild a planner with ``restore`` after a restart.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

from .idset import IDset
from .jobspec import ResourceRequest
from .resource_pool import (
    CandidateSource,
    Grant,
    InfeasibleRequest,
    InsufficientResources,
    ResourcePool,
    _check_time,
    iter_bits,
    mask_from_indices,
    select,
)
from .rv1 import ResourceSet, Rv1

MODES = ("exclusive", "shared")
MAINTENANCE_MODES = ("Drain", "Evict")
#: Most subsets of displaceable bookings ``plan_preemption`` tries while proving that no
#: smaller set would do; past it the answer is irredundant (no booking in it could stay) but
#: not proven smallest.
PREEMPTION_SEARCH_BUDGET = 256
# Maintenance blocks live beside the bookings under keys no booking id can take (booking ids
# are checked non-empty strings; none starts with a NUL).
_BLOCK_KEY = "\0maintenance:"


@dataclass(frozen=True)
class Booking:
    """A granted resource set held for ``[start, end)`` (``end=None``: open-ended).

    ``priority`` decides who may displace whom (``plan_preemption``); ``preemptible`` says
    whether the booking may still be displaced once it has started."""

    id: str
    start: float
    end: float | None
    mode: str
    R: ResourcePool
    priority: int = 0
    preemptible: bool = False

    def covers(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Block:
    """A maintenance window: ``ranks`` (every core and GPU on them) are out of use for
    ``[start, end)``. Blocks always win: nothing new is granted into one, whatever its
    priority, and no preemption displaces one. ``mode`` (``Drain``/``Evict``) tells the life
    cycle what to do with holders already there; the engine treats both alike."""

    name: str
    start: float
    end: float
    ranks: IDset
    mode: str = "Drain"
    reason: str = ""

    def overlaps(self, start: float, end: float | None) -> bool:
        return self.start < (math.inf if end is None else end) and start < self.end


@dataclass(frozen=True)
class Preemption:
    """What ``plan_preemption`` found: the bookings to displace (sorted ids; empty when the
    request fits as things are) and whether the set is proven smallest (``exact``) or only
    irredundant (the search budget ran out on a large pool)."""

    victims: tuple[str, ...]
    exact: bool = True


def queue_key(priority: int, requested_at: float, name: str = "") -> tuple[int, float, str]:
    """The order waiting requests are decided in: higher priority first, then the earlier
    request, then the name (a total order, so every replica decides alike)."""
    return -priority, requested_at, name


def _start_of(entry: tuple[float, str, float | None]) -> float:
    return entry[0]


def _first(entry: tuple[float, str]) -> float:
    return entry[0]


class _TimeIndex:
    """Bookings indexed by time.

    Finite bookings are grouped by length class (lengths in ``[2**(e-1), 2**e)`` share class
    ``e``) and sorted by start inside a class: a booking of class ``e`` overlapping
    ``[s, t)`` must start in ``(s - 2**e, t)``, a bisect away. Open-ended bookings overlap
    ``[s, t)`` iff they start before ``t``.
    """

    def __init__(self) -> None:
        self._classes: dict[int, list[tuple[float, str, float | None]]] = {}
        self._open: list[tuple[float, str, float | None]] = []
        self.starts: list[tuple[float, str]] = []
        self.ends: list[tuple[float, str]] = []

    def copy(self) -> _TimeIndex:
        other = _TimeIndex()
        other._classes = {key: list(entries) for key, entries in self._classes.items()}
        other._open = list(self._open)
        other.starts = list(self.starts)
        other.ends = list(self.ends)
        return other

    @staticmethod
    def _class(start: float, end: float) -> int:
        return math.frexp(end - start)[1]

    def add(self, booking_id: str, start: float, end: float | None) -> None:
        entry = (start, booking_id, end)
        if end is None:
            insort(self._open, entry)
        else:
            insort(self._classes.setdefault(self._class(start, end), []), entry)
            insort(self.ends, (end, booking_id))
        insort(self.starts, (start, booking_id))

    def remove(self, booking_id: str, start: float, end: float | None) -> None:
        entry = (start, booking_id, end)
        if end is None:
            entries = self._open
        else:
            key = self._class(start, end)
            entries = self._classes[key]
            del self.ends[bisect_left(self.ends, (end, booking_id))]
        del entries[bisect_left(entries, entry)]
        if end is not None and not entries:
            del self._classes[self._class(start, end)]
        del self.starts[bisect_left(self.starts, (start, booking_id))]

    def overlapping(self, start: float, end: float | None) -> list[str]:
        """Ids of bookings with ``b.start < end`` and ``b.end > start``."""
        found: list[str] = []
        for exponent, entries in self._classes.items():
            first = bisect_right(entries, start - math.ldexp(1.0, exponent), key=_start_of)
            stop = len(entries) if end is None else bisect_left(entries, end, key=_start_of)
            found.extend(entry[1] for entry in entries[first:stop] if entry[2] > start)  # type: ignore[operator]
        stop = len(self._open) if end is None else bisect_left(self._open, end, key=_start_of)
        found.extend(entry[1] for entry in self._open[:stop])
        return found


class _Displacement:
    """Counts what a request could use while some bookings are displaced, incrementally.

    It mirrors ``Planner._fits``: every eligible rank contributes what the request could
    take from it (one node, or as many slots as its free cores and GPUs hold; a
    node-exclusive request only idle ranks), and the request fits when they add up to what
    it wants. The contributions with every relevant booking in place are summed once;
    displacing a booking (or putting it back) recomputes only the ranks it touches, so a
    step costs the size of its grant, not of the pool. The planner checks the answer it
    settles on with ``_fits`` itself."""

    def __init__(self, planner: Planner, request: ResourceRequest, eligible: int,
                 keys: list[str], candidates: list[str]) -> None:
        pool = planner.pool
        self.grants = planner._grants
        self.core_total, self.gpu_total = pool._core_total, pool._gpu_total
        size, gpu = request.slot_size, request.gpu_per_slot
        self.size, self.gpu = size, gpu
        self.node_mode = request.node_count is not None
        if self.node_mode:
            per_node = request.slot_count.min
            self.need_cores, self.need_gpus = per_node * size, per_node * gpu
            self.want = max(request.nnodes, 1)
        else:
            self.need_cores, self.need_gpus = size, gpu
            self.want = request.slot_count.min
        self.exclusive = request.exclusive
        # Bookings that stay put only matter as what they hold per rank (``fixed``); for the
        # candidates, which eligible ranks each holds something on and who holds each rank.
        self.indices: dict[str, list[int]] = {}
        holders: dict[int, list[str]] = {}
        fixed: dict[int, tuple[int, int]] = {}
        touched = 0
        masks = planner._masks
        movable = set(candidates)
        for key in keys:
            useful = masks[key] & eligible
            if not useful:
                continue
            touched |= useful
            if key in movable:
                if useful == masks[key]:  # all it holds is usable: its grant says where
                    found = [i for i, (cores, gpus) in self.grants[key].items() if cores or gpus]
                else:
                    found = list(iter_bits(useful))
                self.indices[key] = found
                for index in found:
                    holders.setdefault(index, []).append(key)
            else:
                for index, (cores, gpus) in self.grants[key].items():
                    if not (cores or gpus):
                        continue
                    held = fixed.get(index)
                    fixed[index] = (cores, gpus) if held is None else (held[0] | cores,
                                                                        held[1] | gpus)
        self.holders = holders
        self.fixed = fixed
        total = 0
        untouched = eligible & ~touched
        buckets = pool._ensure_total_buckets()
        for bucket in pool._total_keys:
            members = (buckets[bucket] & untouched).bit_count()
            if members:
                total += members * self._share(-bucket[0], -bucket[1], True)
        self.share: dict[int, int] = {}
        if not self.exclusive:  # a touched rank gives a node-exclusive request nothing
            for index in iter_bits(touched):
                value = self._share(*self._free(index, holders.get(index, ()), ()), False)
                self.share[index] = value
                total += value
        else:
            for index in holders:
                self.share[index] = 0
        self.base_total = total
        self.total = total  # with ``removed`` displaced
        self.removed: set[str] = set()
        self.base_share = dict(self.share)

    def _free(
        self, index: int, keys_here: Collection[str], removed: Collection[str]
    ) -> tuple[int, int]:
        cores, gpus = self.fixed.get(index, (0, 0))
        for key in keys_here:
            if key not in removed:
                held = self.grants[key][index]
                cores |= held[0]
                gpus |= held[1]
        return ((self.core_total[index] & ~cores).bit_count(),
                (self.gpu_total[index] & ~gpus).bit_count())

    def _share(self, free_cores: int, free_gpus: int, idle: bool) -> int:
        if self.exclusive and not idle:
            return 0
        if free_cores < self.need_cores or free_gpus < self.need_gpus:
            return 0
        if self.node_mode:
            return 1
        per_rank = free_cores // self.size
        if self.gpu:
            per_rank = min(per_rank, free_gpus // self.gpu)
        return per_rank

    def _rank_share(self, index: int, removed: Collection[str]) -> int:
        keys_here = self.holders[index]
        idle = index not in self.fixed and all(key in removed for key in keys_here)
        if self.exclusive and not idle:
            return 0
        return self._share(*self._free(index, keys_here, removed), idle)

    @property
    def fits(self) -> bool:
        return self.total >= self.want

    def displace(self, key: str) -> None:
        self.removed.add(key)
        self._recount(key)

    def fits_with_back(self, key: str) -> bool:
        """Whether it would still fit with ``key`` put back (nothing changes)."""
        trial = self.removed - {key}
        total = self.total
        for index in self.indices.get(key, ()):
            total += self._rank_share(index, trial) - self.share[index]
        return total >= self.want

    def put_back(self, key: str) -> None:
        self.removed.discard(key)
        self._recount(key)

    def _recount(self, key: str) -> None:
        """Count again, with ``removed`` as it is now, the ranks ``key``'s booking touches."""
        for index in self.indices.get(key, ()):
            value = self._rank_share(index, self.removed)
            self.total += value - self.share[index]
            self.share[index] = value

    def fits_without(self, removed: Collection[str]) -> bool:
        """Whether it fits with exactly ``removed`` displaced (from the base state)."""
        total = self.base_total
        seen: set[int] = set()
        for key in removed:
            for index in self.indices.get(key, ()):
                if index not in seen:
                    seen.add(index)
                    total += self._rank_share(index, removed) - self.base_share[index]
        return total >= self.want


def _check_window(start: object, end: object) -> tuple[float, float | None]:
    begin = _check_time(start, "start")
    if end is None:
        return begin, None
    finish = _check_time(end, "end")
    if finish <= begin:
        raise ValueError(f"window end {finish} is not after its start {begin}")
    return begin, finish


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'exclusive' or 'shared', got {mode!r}")
    return str(mode)


def _check_id(booking_id: object) -> str:
    if not isinstance(booking_id, str) or not booking_id:
        raise ValueError(f"booking id must be a non-empty string, got {booking_id!r}")
    return booking_id


class Planner:
    """Time planner over one pool (see docs/architecture.md for the contract)."""

    def __init__(self, R: dict[str, Any] | str | ResourcePool) -> None:
        if isinstance(R, ResourcePool):
            pool = ResourcePool(R.to_dict())
            down = R.copy_down().ranks
            if down:
                pool.mark_down(down)
        else:
            pool = ResourcePool(R)
        self.pool = pool
        self._bookings: dict[str, Booking] = {}
        self._grants: dict[str, Grant] = {}
        self._masks: dict[str, int] = {}  # booking id -> mask of the rank indices it holds
        self._index = _TimeIndex()
        self._generation = 0
        self._blocks: dict[str, Block] = {}  # block key -> maintenance window
        self._block_index = _TimeIndex()
        # booking id -> ids of the bookings that displaced it (no cascades: a displaced
        # booking never displaces its displacer, whatever priorities say by then).
        self._displaced_by: dict[str, set[str]] = {}
        self._priorities: dict[int, int] = {}  # priority -> how many bookings have it

    def copy(self) -> Planner:
        """An independent planner with the same pool (topology, down ranks, expiration) and
        bookings: a scratch copy for asking "what if these were booked too" without touching
        this one (bookings are immutable and shared; everything mutable is copied)."""
        other = Planner.__new__(Planner)
        other.pool = self.pool.copy()
        other._bookings = dict(self._bookings)
        other._grants = dict(self._grants)
        other._masks = dict(self._masks)
        other._index = self._index.copy()
        other._generation = self._generation
        other._blocks = dict(self._blocks)
        other._block_index = self._block_index.copy()
        other._displaced_by = self.displacements()
        other._priorities = dict(self._priorities)
        return other

    # -- properties ------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def expiration(self) -> float:
        return self.pool.expiration

    @expiration.setter
    def expiration(self, value: float) -> None:
        self.set_expiration(value)

    def set_expiration(self, expiration: float) -> None:
        self.pool.set_expiration(expiration)
        self._generation += 1

    # -- requests ----------------------------------------------------------------------

    def parse(self, jobspec: Mapping[str, Any]) -> ResourceRequest:
        return self.pool.parse_resource_request(jobspec)

    def check_feasibility(self, request: object) -> None:
        self.pool.check_feasibility(request)

    def _past_expiration(self, end: float | None) -> bool:
        expiration = self.pool.expiration
        return bool(expiration) and (end is None or end > expiration)

    def _relevant(
        self, start: float, end: float | None, mode: str, exclude: str | None = None
    ) -> list[str]:
        """Ids of bookings overlapping ``[start, end)`` that ``mode`` cannot share with."""
        bookings = self._bookings
        relevant = [
            booking_id
            for booking_id in self._index.overlapping(start, end)
            if booking_id != exclude
            and not (mode == "shared" and bookings[booking_id].mode == "shared")
        ]
        if self._blocks:
            relevant.extend(self._block_index.overlapping(start, end))
        return relevant

    def _blocked(self, booking_ids: list[str]) -> dict[int, tuple[int, int]]:
        """Per rank index, the union of what ``booking_ids`` hold."""
        blocked: dict[int, tuple[int, int]] = {}
        grants = self._grants
        for booking_id in booking_ids:
            for index, (cores, gpus) in grants[booking_id].items():
                held = blocked.get(index)
                if held is None:
                    blocked[index] = (cores, gpus)
                else:
                    blocked[index] = (held[0] | cores, held[1] | gpus)
        return blocked

    def _candidates(self, eligible: int, booking_ids: list[str]) -> CandidateSource:
        """Worst-fit candidates over what ``booking_ids`` leave free.

        Ranks no booking touches are streamed from the pool's static total-capacity buckets.
        A touched rank always ranks below its own total-capacity bucket, so its free sets
        are computed only once the stream has passed that bucket (often never: worst-fit
        prefers untouched nodes).
        """
        pool = self.pool
        core_total, gpu_total = pool._core_total, pool._gpu_total
        masks = self._masks
        touched_mask = 0
        for booking_id in booking_ids:
            touched_mask |= masks[booking_id]
        blocked: dict[int, tuple[int, int]] | None = None

        def candidates(
            need_cores: int, need_gpus: int, idle_only: bool
        ) -> Iterator[tuple[int, int, int]]:
            nonlocal blocked
            buckets = pool._ensure_total_buckets()
            untouched = eligible & ~touched_mask
            touched = eligible & touched_mask
            waiting: list[tuple[int, int, int, int, int]] = []  # heap of touched candidates
            for key in pool._total_keys:
                if -key[0] < need_cores:
                    break
                if -key[1] < need_gpus:
                    continue
                bucket = buckets[key]
                members = bucket & untouched
                for index in iter_bits(members):
                    while waiting and waiting[0][:3] < (key[0], key[1], index):
                        item = heapq.heappop(waiting)
                        yield item[2], item[3], item[4]
                    yield index, core_total[index], gpu_total[index]
                if idle_only:
                    continue  # a touched rank is never idle
                members = bucket & touched
                if not members:
                    continue
                if blocked is None:
                    blocked = self._blocked(booking_ids)
                for index in iter_bits(members):
                    cores, gpus = blocked[index]
                    free_cores = core_total[index] & ~cores
                    free_gpus = gpu_total[index] & ~gpus
                    ncores, ngpus = free_cores.bit_count(), free_gpus.bit_count()
                    if ncores >= need_cores and ngpus >= need_gpus:
                        heapq.heappush(waiting, (-ncores, -ngpus, index, free_cores, free_gpus))
            while waiting:
                item = heapq.heappop(waiting)
                yield item[2], item[3], item[4]

        return candidates

    def _fits(self, request: ResourceRequest, eligible: int, booking_ids: list[str]) -> bool:
        """Whether ``select`` would succeed, by counting instead of building the grant.

        Node modes succeed iff enough ranks qualify, slot mode iff the qualifying ranks
        hold enough slots; untouched ranks are counted per capacity class with one popcount.
        """
        pool = self.pool
        size, gpu = request.slot_size, request.gpu_per_slot
        node_mode = request.node_count is not None
        if node_mode:
            per_node = request.slot_count.min
            need_cores, need_gpus = per_node * size, per_node * gpu
            want = max(request.nnodes, 1)
        else:
            need_cores, need_gpus = size, gpu
            want = request.slot_count.min
        touched_mask = 0
        for booking_id in booking_ids:
            touched_mask |= self._masks[booking_id]
        untouched = eligible & ~touched_mask
        buckets = pool._ensure_total_buckets()
        found = 0
        for key in pool._total_keys:
            if -key[0] < need_cores:
                break
            if -key[1] < need_gpus:
                continue
            members = (buckets[key] & untouched).bit_count()
            if not members:
                continue
            if node_mode:
                found += members
            else:
                per_rank = -key[0] // size
                if gpu:
                    per_rank = min(per_rank, -key[1] // gpu)
                found += per_rank * members
            if found >= want:
                return True
        touched = eligible & touched_mask
        if request.exclusive or not touched:
            return False  # a touched rank is never idle
        blocked = self._blocked(booking_ids)
        core_total, gpu_total = pool._core_total, pool._gpu_total
        for index in iter_bits(touched):
            cores, gpus = blocked[index]
            free_cores = (core_total[index] & ~cores).bit_count()
            free_gpus = (gpu_total[index] & ~gpus).bit_count()
            if free_cores < need_cores or free_gpus < need_gpus:
                continue
            if node_mode:
                found += 1
            else:
                per_rank = free_cores // size
                if gpu:
                    per_rank = min(per_rank, free_gpus // gpu)
                found += per_rank
            if found >= want:
                return True
        return False

    def _select(
        self,
        request: ResourceRequest,
        start: float,
        end: float | None,
        mode: str,
        exclude: str | None = None,
    ) -> tuple[list[tuple[int, int, int]], int] | None:
        if request.is_discrete or self._past_expiration(end):
            return None
        pool = self.pool
        eligible = pool._constraint_mask(request.constraint) & pool._up
        if not eligible:
            return None
        return select(
            request, self._candidates(eligible, self._relevant(start, end, mode, exclude))
        )

    def fits(self, request: object, start: float, end: float | None, mode: str) -> bool:
        """Whether ``request`` can be granted for all of ``[start, end)`` in ``mode``."""
        begin, finish = _check_window(start, end)
        mode = _check_mode(mode)
        req = self.pool._coerce_request(request)
        if req.is_discrete or self._past_expiration(finish):
            return False
        eligible = self.pool._constraint_mask(req.constraint) & self.pool._up
        return self._fits(req, eligible, self._relevant(begin, finish, mode))

    def _book(
        self,
        booking_id: str,
        start: float,
        end: float | None,
        mode: str,
        R: ResourcePool,
        grant: Grant,
        priority: int = 0,
        preemptible: bool = False,
    ) -> Booking:
        booking = Booking(booking_id, start, end, mode, R, int(priority), bool(preemptible))
        self._bookings[booking_id] = booking
        self._count_priority(booking.priority, 1)
        self._grants[booking_id] = grant
        self._masks[booking_id] = mask_from_indices(
            (index for index, (cores, gpus) in grant.items() if cores or gpus),
            len(self.pool._ranks),
        )
        self._index.add(booking_id, start, end)
        self._generation += 1
        return booking

    def _check_new_booking(
        self, booking_id: str, start: float, end: float | None, mode: str
    ) -> tuple[str, float, float | None, str]:
        """Validate what every call that adds a booking is given; nothing is changed."""
        booking_id = _check_id(booking_id)
        if booking_id in self._bookings:
            raise ValueError(f"booking {booking_id!r} already exists")
        begin, finish = _check_window(start, end)
        return booking_id, begin, finish, _check_mode(mode)

    def reserve(
        self,
        booking_id: str,
        request: object,
        start: float,
        end: float | None,
        mode: str,
        priority: int = 0,
        preemptible: bool = False,
    ) -> Booking:
        """Book ``request`` for exactly ``[start, end)``; a failed call changes nothing."""
        booking_id, begin, finish, mode = self._check_new_booking(booking_id, start, end, mode)
        req = self.pool._coerce_request(request)
        self.pool.check_feasibility(req)
        if self._past_expiration(finish):
            raise InsufficientResources(
                f"window [{begin}, {finish}) ends after the pool's expiration {self.pool.expiration}"
            )
        selection = self._select(req, begin, finish, mode)
        if selection is None:
            raise InsufficientResources(f"insufficient resources for [{begin}, {finish})")
        chosen, nslots = selection
        grant: Grant = {index: (cores, gpus) for index, cores, gpus in chosen}
        granted = self.pool._child(grant, nslots)
        granted._starttime = begin
        granted._expiration = finish or 0.0
        return self._book(booking_id, begin, finish, mode, granted, grant, priority, preemptible)

    def earliest(
        self,
        request: object,
        duration: float | None,
        after: float,
        mode: str,
        deadline: float | None = None,
    ) -> float | None:
        """Earliest start >= ``after`` (and <= ``deadline``) with the window free.

        Candidates are ``after`` and every booking end after it (conservative backfill).
        ``None`` when no such start exists.
        """
        return self._earliest(request, duration, after, mode, deadline, None)

    def _earliest(
        self,
        request: object,
        duration: float | None,
        after: float,
        mode: str,
        deadline: float | None,
        exclude: str | None,
    ) -> float | None:
        """``earliest``, with the booking ``exclude`` (if any) not counted as held."""
        begin = _check_time(after, "after")
        if duration is not None:
            length = _check_time(duration, "duration")
            if length <= 0:
                raise ValueError(f"duration must be > 0, got {duration!r}")
        limit = None if deadline is None else _check_time(deadline, "deadline")
        mode = _check_mode(mode)
        req = self.pool._coerce_request(request)
        pool = self.pool
        if req.is_discrete:
            return None
        eligible = pool._constraint_mask(req.constraint) & pool._up
        if pool._feasibility_error(req, eligible) is not None:
            return None  # cannot fit the up ranks even with nothing booked
        candidate = begin
        while True:
            if limit is not None and candidate > limit:
                return None
            finish = None if duration is None else candidate + float(duration)
            if self._past_expiration(finish):
                return None
            relevant = self._relevant(candidate, finish, mode, exclude)
            if self._fits(req, eligible, relevant):
                return candidate
            next_start = self._next_possible_start(req, eligible, relevant)
            if next_start is None:
                return None
            candidate = next_start

    def _end_of(self, key: str) -> float | None:
        """The end of a booking or of a maintenance block."""
        booking = self._bookings.get(key)
        if booking is not None:
            return booking.end
        return self._blocks[key].end

    def _next_possible_start(
        self, request: ResourceRequest, eligible: int, blocking: list[str]
    ) -> float | None:
        """The first booking end at which ``request`` could fit, judging by ``blocking``.

        ``blocking`` are the bookings that made a window starting at some t fail. A window
        starting at any later e (before they end) still overlaps every one of them that
        ends after e, and a request that does not fit does not fit in less. So the answer
        is the smallest end value e_k such that the request fits with only the bookings
        ending after e_k blocked (found by bisection: fitting is monotone in k); every
        candidate before it would fail. ``None``: it does not fit even when all finite
        ones have ended (the open-ended ones never do).
        """
        end_of = self._end_of
        open_ended = [b for b in blocking if end_of(b) is None]
        finite = sorted((end, b) for b in blocking if (end := end_of(b)) is not None)
        if not finite:
            return None
        ends = [end for end, _ in finite]
        values = sorted(set(ends))

        def fits_after(position: int) -> bool:
            still = open_ended + [b for _, b in finite[bisect_right(ends, values[position]) :]]
            return self._fits(request, eligible, still)

        low, high = 0, len(values) - 1
        if not fits_after(high):
            return None
        while low < high:
            middle = (low + high) // 2
            if fits_after(middle):
                high = middle
            else:
                low = middle + 1
        return values[low]

    def reserve_earliest(
        self,
        booking_id: str,
        request: object,
        duration: float | None,
        after: float,
        mode: str,
        deadline: float | None = None,
        priority: int = 0,
        preemptible: bool = False,
    ) -> Booking | None:
        booking_id = _check_id(booking_id)
        if booking_id in self._bookings:
            raise ValueError(f"booking {booking_id!r} already exists")
        req = self.pool._coerce_request(request)
        self.pool.check_feasibility(req)
        start = self.earliest(req, duration, after, mode, deadline)
        if start is None:
            return None
        end = None if duration is None else start + float(duration)
        return self.reserve(booking_id, req, start, end, mode, priority, preemptible)

    def move_earlier(
        self,
        booking_id: str,
        request: object,
        duration: float,
        after: float,
        mode: str,
        deadline: float,
    ) -> Booking | None:
        """Move a booking to the earliest start in ``[after, deadline]`` at which ``request``
        fits, its own hold not counted, for ``duration`` seconds in ``mode``. None when there
        is no such start: then nothing changed, not even the generation (a release and
        re-booking of the same window would look like capacity changing to everyone who
        watches the generation, issue 11 item 4)."""
        booking = self._bookings.get(booking_id)
        if booking is None:
            raise ValueError(f"unknown booking {booking_id!r}")
        req = self.pool._coerce_request(request)
        start = self._earliest(req, duration, after, mode, deadline, booking_id)
        if start is None:
            return None
        self.release(booking_id)
        try:
            return self.reserve(booking_id, req, start, start + float(duration), mode,
                                booking.priority, booking.preemptible)
        except (InsufficientResources, InfeasibleRequest, ValueError):
            # Not expected (the same question was just answered), but never lose the hold.
            self.restore(booking_id, booking.R, booking.start, booking.end, booking.mode,
                         booking.priority, booking.preemptible)
            raise

    def _conflicts(
        self,
        grant: Grant,
        start: float,
        end: float | None,
        mode: str,
        exclude: str | None,
        blocks: bool = False,
    ) -> list[str]:
        """Bookings (and with ``blocks``, maintenance blocks, named ``maintenance 'x'``) that
        ``grant`` would clash with in ``[start, end)``."""
        clashes: list[str] = []
        others = self._index.overlapping(start, end)
        if blocks:
            others += self._block_index.overlapping(start, end)
        for other_id in others:
            if other_id == exclude:
                continue
            block = self._blocks.get(other_id)
            if block is None and mode == "shared" and self._bookings[other_id].mode == "shared":
                continue
            other = self._grants[other_id]
            for index, (cores, gpus) in grant.items():
                held = other.get(index)
                if held is not None and (cores & held[0] or gpus & held[1]):
                    clashes.append(other_id if block is None else f"maintenance {block.name!r}")
                    break
        return sorted(clashes)

    def extend(self, booking_id: str, new_end: float | None) -> None:
        """Move a booking's end; a later end must not conflict or pass the expiration."""
        booking = self._bookings.get(booking_id)
        if booking is None:
            raise ValueError(f"unknown booking {booking_id!r}")
        _, finish = _check_window(booking.start, new_end)
        longer = booking.end is not None and (finish is None or finish > booking.end)
        if longer:
            if self._past_expiration(finish):
                raise InsufficientResources(
                    f"cannot extend {booking_id!r} to {finish}: past the pool's expiration "
                    f"{self.pool.expiration}"
                )
            assert booking.end is not None
            clashes = self._conflicts(
                self._grants[booking_id], booking.end, finish, booking.mode, booking_id, True
            )
            if clashes:
                raise InsufficientResources(
                    f"cannot extend {booking_id!r} to {finish}: conflicts with booking(s) "
                    f"{', '.join(clashes)}"
                )
        if finish == booking.end:
            return
        granted = booking.R.copy()
        granted._expiration = finish or 0.0
        self._index.remove(booking_id, booking.start, booking.end)
        self._bookings[booking_id] = replace(booking, end=finish, R=granted)
        self._index.add(booking_id, booking.start, finish)
        self._generation += 1

    def release(self, booking_id: str) -> Booking | None:
        booking = self._bookings.pop(booking_id, None)
        if booking is None:
            return None
        self._count_priority(booking.priority, -1)
        del self._grants[booking_id]
        del self._masks[booking_id]
        self._index.remove(booking_id, booking.start, booking.end)
        self._generation += 1
        return booking

    def restore(
        self,
        booking_id: str,
        R: object,
        start: float,
        end: float | None,
        mode: str,
        priority: int = 0,
        preemptible: bool = False,
    ) -> Booking:
        """Register an existing grant (after a restart); refuses conflicts with bookings
        (maintenance declared since it was granted is the life cycle's to judge)."""
        booking_id, begin, finish, mode = self._check_new_booking(booking_id, start, end, mode)
        grant, source = self.pool._grant_from(R, f"booking {booking_id!r}")
        clashes = self._conflicts(grant, begin, finish, mode, None)
        if clashes:
            raise ValueError(
                f"booking {booking_id!r} conflicts with booking(s) {', '.join(clashes)}"
            )
        granted = source.copy() if source is R else source
        return self._book(booking_id, begin, finish, mode, granted, grant, priority, preemptible)

    def set_priority(self, booking_id: str, priority: int, preemptible: bool) -> Booking:
        """Change who may displace a booking (its reservation's priority class or
        ``preemptible`` changed); the hold itself is untouched."""
        booking = self._bookings.get(booking_id)
        if booking is None:
            raise ValueError(f"unknown booking {booking_id!r}")
        changed = replace(booking, priority=int(priority), preemptible=bool(preemptible))
        if changed != booking:
            self._count_priority(booking.priority, -1)
            self._count_priority(changed.priority, 1)
            self._bookings[booking_id] = changed
            self._generation += 1
        return changed

    def _count_priority(self, priority: int, delta: int) -> None:
        count = self._priorities.get(priority, 0) + delta
        if count:
            self._priorities[priority] = count
        else:
            del self._priorities[priority]

    def lowest_priority(self) -> int | None:
        """The lowest priority any booking has (None: no bookings): a request of this
        priority or lower can displace nobody, so callers need not plan a preemption."""
        return min(self._priorities, default=None)

    # -- maintenance -------------------------------------------------------------------

    def set_maintenance(self, blocks: Iterable[Block]) -> list[str]:
        """Make ``blocks`` the pool's maintenance windows (replacing any before); returns the
        ids of bookings that hold something on a block's ranks in its time, for the life
        cycle to re-plan or cut back. Ranks a block names that the pool does not have are
        ignored; names must be unique."""
        new: dict[str, Block] = {}
        for block in blocks:
            if not isinstance(block, Block):
                raise ValueError(f"expected a Block, got {block!r}")
            _check_window(block.start, block.end)
            if block.mode not in MAINTENANCE_MODES:
                raise ValueError(f"maintenance mode must be 'Drain' or 'Evict', got {block.mode!r}")
            key = _BLOCK_KEY + block.name
            if key in new:
                raise ValueError(f"maintenance window {block.name!r} is named twice")
            new[key] = block
        if new == self._blocks:
            return self._under_maintenance()
        for key, block in self._blocks.items():
            self._block_index.remove(key, block.start, block.end)
            del self._grants[key]
            del self._masks[key]
        pool = self.pool
        for key, block in new.items():
            mask = pool._ranks_mask(block.ranks)
            self._grants[key] = {
                index: (pool._core_total[index], pool._gpu_total[index])
                for index in iter_bits(mask)
            }
            self._masks[key] = mask
            self._block_index.add(key, block.start, block.end)
        self._blocks = new
        self._generation += 1
        return self._under_maintenance()

    def maintenance(self) -> list[Block]:
        """The maintenance windows, by start then name."""
        return [self._blocks[key] for _, key in self._block_index.starts]

    def _under_maintenance(self) -> list[str]:
        found: set[str] = set()
        for key, block in self._blocks.items():
            mask = self._masks[key]
            for booking_id in self._index.overlapping(block.start, block.end):
                if self._masks[booking_id] & mask:
                    found.add(booking_id)
        return sorted(found)

    def maintenance_over(self, booking_id: str) -> list[Block]:
        """The maintenance windows a booking holds something in (by start, then name)."""
        booking = self._bookings.get(booking_id)
        if booking is None or not self._blocks:
            return []
        mask = self._masks[booking_id]
        keys = self._block_index.overlapping(booking.start, booking.end)
        found = [self._blocks[key] for key in keys if self._masks[key] & mask]
        return sorted(found, key=lambda block: (block.start, block.name))

    def maintenance_in_way(
        self, request: object, start: float, end: float | None, mode: str
    ) -> list[Block]:
        """The maintenance windows that keep ``request`` out of ``[start, end)``: empty when
        it fits as things are, or would not fit even without maintenance (then bookings or
        down ranks are in the way); else the blocks over ranks it could use, by start."""
        begin, finish = _check_window(start, end)
        mode = _check_mode(mode)
        req = self.pool._coerce_request(request)
        if not self._blocks or req.is_discrete or self._past_expiration(finish):
            return []
        eligible = self.pool._constraint_mask(req.constraint) & self.pool._up
        relevant = self._relevant(begin, finish, mode)
        if self._fits(req, eligible, relevant):
            return []
        bookings_only = [key for key in relevant if key not in self._blocks]
        if not self._fits(req, eligible, bookings_only):
            return []
        found = [self._blocks[key] for key in relevant
                 if key in self._blocks and self._masks[key] & eligible]
        return sorted(found, key=lambda block: (block.start, block.name))

    # -- preemption ---------------------------------------------------------------------

    def displaced_by(self, booking_id: str) -> set[str]:
        """Who has displaced this booking (the life cycle records it in the reservation's
        status.displacedBy, and `note_displaced` puts it back after a restart or rebuild)."""
        return set(self._displaced_by.get(booking_id, ()))

    def displacements(self) -> dict[str, set[str]]:
        """Every booking id -> who displaced it (to carry over into a rebuilt planner)."""
        return {key: set(value) for key, value in self._displaced_by.items()}

    def note_displaced(self, booking_id: str, displacers: Iterable[str]) -> None:
        """Remember that ``displacers`` displaced ``booking_id``, so that it never displaces
        them in turn (no cascades) - also after a restart or a rebuild of the planner."""
        known = {str(d) for d in displacers if d}
        if known:
            self._displaced_by.setdefault(booking_id, set()).update(known)

    def plan_preemption(
        self,
        booking_id: str,
        request: object,
        start: float,
        end: float | None,
        mode: str,
        priority: int,
        now: float,
        protected: Collection[str] = (),
        budget: int = PREEMPTION_SEARCH_BUDGET,
    ) -> Preemption | None:
        """The smallest set of bookings to displace so that ``request`` (of ``priority``, for
        the booking ``booking_id``, whose own hold is not counted) fits ``[start, end)``.

        A booking may be displaced only if its priority is strictly lower, it is not one
        that displaced ``booking_id`` before (no cascades) nor in ``protected``, and it has
        not started by ``now`` unless it is ``preemptible``. Maintenance blocks are never
        displaced. ``None``: it does not fit even with every displaceable booking gone;
        empty victims: it fits as things are. A query: nothing changes.

        The set is found by removing candidates (lowest priority first, then those freeing
        the most of what the request can use) until it fits - a bisection over the prefix,
        fitting being monotone - then putting back each one it fits without; then every
        smaller set is tried while at most ``budget`` fitting tests prove none fits
        (``exact``)."""
        begin, finish = _check_window(start, end)
        mode = _check_mode(mode)
        req = self.pool._coerce_request(request)
        if req.is_discrete or self._past_expiration(finish):
            return None
        pool = self.pool
        eligible = pool._constraint_mask(req.constraint) & pool._up
        if not eligible:
            return None
        relevant = self._relevant(begin, finish, mode, booking_id)
        if self._fits(req, eligible, relevant):
            return Preemption(())
        shielded = set(protected) | self._displaced_by.get(booking_id, set())
        bookings, masks = self._bookings, self._masks
        scored: list[tuple[int, int, float, str]] = []
        for key in relevant:
            booking = bookings.get(key)
            if (
                booking is None  # a maintenance block
                or booking.priority >= priority
                or key in shielded
                or (booking.start <= now and not booking.preemptible)
            ):
                continue  # stays where it is
            mask = masks[key]
            useful = mask & eligible
            if not useful:
                continue  # holds nothing the request could use: displacing it cannot help
            grant = self._grants[key]
            if useful == mask:  # the usual case: all it holds is usable (no big-int walk)
                freed = sum(cores.bit_count() + gpus.bit_count() for cores, gpus in grant.values())
            else:
                freed = sum(grant[index][0].bit_count() + grant[index][1].bit_count()
                            for index in iter_bits(useful))
            scored.append((booking.priority, -freed, -booking.start, key))
        if not scored:
            return None
        scored.sort()
        candidates = [item[3] for item in scored]
        search = _Displacement(self, req, eligible, relevant, candidates)
        # Displace candidates in order until it fits, then put back each one it still fits
        # without (latest first): an irredundant set.
        chosen: list[str] = []
        for key in candidates:
            search.displace(key)
            chosen.append(key)
            if search.fits:
                break
        if not search.fits:
            return None
        for key in reversed(list(chosen)):
            if search.fits_with_back(key):
                search.put_back(key)
                chosen.remove(key)
        fits_without = search.fits_without
        exact = True
        tests = 0
        for size in range(1, len(chosen)):
            if math.comb(len(candidates), size) > budget - tests:
                exact = False
                break
            for combo in combinations(candidates, size):
                tests += 1
                if fits_without(set(combo)):
                    chosen, exact = list(combo), True
                    break
            else:
                continue
            break
        # The incremental count mirrors _fits; the answer is checked with _fits itself.
        removed = set(chosen)
        if not self._fits(req, eligible, [key for key in relevant if key not in removed]):
            raise AssertionError(f"preemption plan {sorted(removed)} does not fit")  # a bug
        return Preemption(tuple(sorted(chosen)), exact)

    def preempt(self, displacer: str, victims: Iterable[str], at: float, now: float) -> list[str]:
        """Make room for ``displacer`` from ``at`` on: each victim that has started by ``now``
        is cut back to end at ``at`` (released if that leaves nothing), every other one is
        released. Records who displaced whom (``displaced_by``). Returns the ids released."""
        moment = _check_time(at, "at")
        released: list[str] = []
        for victim in victims:
            booking = self._bookings.get(victim)
            if booking is None:
                continue
            self._displaced_by.setdefault(victim, set()).add(displacer)
            if booking.start <= now and booking.start < moment:
                if booking.end is None or booking.end > moment:
                    self.extend(victim, moment)
            else:
                self.release(victim)
                released.append(victim)
        return released

    # -- queries -----------------------------------------------------------------------

    def get(self, booking_id: str) -> Booking | None:
        return self._bookings.get(booking_id)

    def bookings(self) -> list[Booking]:
        """All bookings, by start then id."""
        return [self._bookings[booking_id] for _, booking_id in self._index.starts]

    def _touching(self, mask: int) -> list[str]:
        return [
            booking_id for _, booking_id in self._index.starts if self._masks[booking_id] & mask
        ]

    def mark_down(self, ids: object) -> list[str]:
        """Mark ranks down; returns the ids of bookings holding anything on them."""
        mask = self.pool._ids_mask(ids)
        self.pool.mark_down(ids)
        self._generation += 1
        return self._touching(mask)

    def mark_up(self, ids: object) -> None:
        self.pool.mark_up(ids)
        self._generation += 1

    def remove_ranks(self, ranks: object) -> list[Booking]:
        """Remove ranks from the pool; releases and returns the bookings on them."""
        mask = self.pool._ids_mask(ranks)
        released = [self._bookings[booking_id] for booking_id in self._touching(mask)]
        for booking in released:
            self.release(booking.id)
        self.pool.remove_ranks(ranks)
        self._generation += 1
        return released

    def down(self) -> IDset:
        return IDset(self.pool._mask_ranks(self.pool._present & ~self.pool._up))

    def _held_at(self, t: float) -> dict[int, tuple[int, int]]:
        held: dict[int, tuple[int, int]] = {}
        for booking_id in self._index.overlapping(t, math.nextafter(t, math.inf)):
            for index, (cores, gpus) in self._grants[booking_id].items():
                if self.pool._ranks[index] not in self.pool._index:
                    continue  # removed rank
                old = held.get(index, (0, 0))
                held[index] = (old[0] | cores, old[1] | gpus)
        return held

    def allocated_at(self, t: float) -> ResourceSet:
        """What the bookings covering ``t`` hold."""
        moment = _check_time(t, "t")
        pool = self.pool
        held = {i: v for i, v in self._held_at(moment).items() if v[0] or v[1]}
        rv1 = Rv1()
        indices = sorted(held)
        rv1.ranks = [pool._ranks[i] for i in indices]
        rv1.cores = {pool._ranks[i]: held[i][0] for i in indices}
        rv1.gpus = {pool._ranks[i]: held[i][1] for i in indices}
        held_mask = mask_from_indices(indices, len(pool._ranks))
        for name, mask in pool._props.items():
            if mask & held_mask:
                rv1.properties[name] = IDset(pool._mask_ranks(mask & held_mask))
        if pool._has_nodelist:
            rv1.has_nodelist = True
            rv1.hostnames = {pool._ranks[i]: pool._hostnames[i] for i in indices}
        return ResourceSet(rv1)

    def capacity(self, t: float) -> dict[str, dict[str, int]]:
        """Totals per type at ``t``: total, allocated, down, free (free excludes down).

        Node ``allocated`` counts ranks with anything allocated at ``t``; node ``free``
        counts up ranks with nothing allocated. Cost: the pool's capacity classes plus
        the ranks bookings touch at ``t``, not every rank.
        """
        moment = _check_time(t, "t")
        pool = self.pool
        present, up = pool._present, pool._up
        down_mask = present & ~up
        totals = {"core": 0, "gpu": 0, "node": 0}
        downs = {"core": 0, "gpu": 0, "node": 0}
        buckets = pool._ensure_total_buckets()
        for key in pool._total_keys:
            members = buckets[key] & present
            count = members.bit_count()
            down_count = (members & down_mask).bit_count()
            totals["core"] += -key[0] * count
            totals["gpu"] += -key[1] * count
            totals["node"] += count
            downs["core"] += -key[0] * down_count
            downs["gpu"] += -key[1] * down_count
            downs["node"] += down_count
        used = {"core": 0, "gpu": 0, "node": 0}
        used_up = {"core": 0, "gpu": 0, "node": 0}
        held = {i: v for i, v in self._held_at(moment).items() if v[0] or v[1]}
        held_up = set(iter_bits(mask_from_indices(held, len(pool._ranks)) & up))
        for index, (cores, gpus) in held.items():
            counts = {"core": cores.bit_count(), "gpu": gpus.bit_count(), "node": 1}
            for kind, value in counts.items():
                used[kind] += value
                if index in held_up:
                    used_up[kind] += value
        return {
            kind: {
                "total": totals[kind],
                "allocated": used[kind],
                "down": downs[kind],
                "free": totals[kind] - downs[kind] - used_up[kind],
            }
            for kind in ("core", "gpu", "node")
        }

    def longest(self, request: object, start: float, mode: str) -> float | None:
        """The longest window starting at ``start`` in which ``request`` fits, in seconds: 0
        when it does not fit at ``start`` at all, None when it fits open-ended (no booking
        after ``start`` is in its way and the pool does not expire). A query: nothing is
        booked.

        Fitting only gets harder as the window grows, and it changes only where a booking
        starts: the answer is the latest booking start (or the pool's expiration) up to
        which it still fits, found by bisection."""
        begin = _check_time(start, "start")
        mode = _check_mode(mode)
        req = self.pool._coerce_request(request)
        if req.is_discrete:
            return 0.0
        eligible = self.pool._constraint_mask(req.constraint) & self.pool._up
        if self.pool._feasibility_error(req, eligible) is not None:
            return 0.0
        ends = sorted({entry[0] for entry in self._index.starts + self._block_index.starts
                       if entry[0] > begin})
        expiration = self.pool.expiration
        if expiration:
            if expiration <= begin:
                return 0.0
            ends = [end for end in ends if end < expiration] + [expiration]

        def open_ended() -> bool:
            return self._fits(req, eligible, self._relevant(begin, None, mode))

        if not ends:  # nothing starts later, and the pool does not expire
            return None if open_ended() else 0.0

        def fits_until(position: int) -> bool:
            return self._fits(req, eligible, self._relevant(begin, ends[position], mode))

        # Up to the first later start, the window meets exactly what holds at `start`.
        if not fits_until(0):
            return 0.0
        low, high = 0, len(ends) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if fits_until(middle):
                low = middle
            else:
                high = middle - 1
        if not expiration and low == len(ends) - 1 and open_ended():
            return None
        return ends[low] - begin

    def free_over_time(
        self, start: float, end: float, limit: int = 1000
    ) -> list[tuple[float, dict[str, dict[str, int]]]]:
        """``capacity()`` at ``start`` and at every booking start or end until ``end``: the
        steps of what is free over ``[start, end)`` (at most ``limit`` of them)."""
        moment = _check_time(start, "start")
        finish = _check_time(end, "end")
        steps: list[tuple[float, dict[str, dict[str, int]]]] = []
        t: float | None = moment
        while t is not None and t < finish and len(steps) < limit:
            steps.append((t, self.capacity(t)))
            t = self.next_event(t)
        return steps

    def next_event(self, after: float) -> float | None:
        """The next booking start or end strictly after ``after``."""
        moment = _check_time(after, "after")
        best: float | None = None
        for entries in (self._index.starts, self._index.ends):
            position = bisect_right(entries, moment, key=_first)
            if position < len(entries):
                value = entries[position][0]
                if best is None or value < best:
                    best = value
        return best


__all__ = [
    "MAINTENANCE_MODES",
    "MODES",
    "PREEMPTION_SEARCH_BUDGET",
    "Block",
    "Booking",
    "InfeasibleRequest",
    "InsufficientResources",
    "Planner",
    "Preemption",
    "queue_key",
]

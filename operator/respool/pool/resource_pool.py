"""``ResourcePool``: a Flux-compatible (``Rv1Pool``) resource pool with incremental indexes.

Layout. Ranks are numbered by position (their *index*) in ascending rank order; indices are
never reused, so ascending index order is ascending rank order. Per index the pool keeps
the core and GPU sets as int bitmasks (total and allocated). Sets of ranks (present, up,
idle, each property, each "bucket") are int bitmasks over indices.

Selection without sorting. Flux sorts every candidate by (free cores, free GPUs) descending,
ties to the lower rank, on every allocation. Here each present rank sits in exactly one
*bucket* keyed by its (free cores, free GPUs); the bucket keys are kept sorted. Walking the
keys from the largest and, inside a bucket, the set bits from the lowest gives exactly the
Flux order, so an allocation costs a few big-int operations instead of O(ranks log ranks).
A second, static set of buckets keyed by *total* (cores, GPUs) answers feasibility and
exclusive-node queries.
"""

from __future__ import annotations

import json
import math
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .constraint import evaluate_constraint, validate_constraint
from .hostlist import Hostlist
from .idset import IDset
from .jobspec import ResourceRequest, parse_jobspec
from .rv1 import (
    ResourceSet,
    Rv1,
    dumps_groups,
    encode_rv1,
    group_ranks,
    parse_rv1,
)


class InfeasibleRequest(OSError):
    """The request can never be satisfied by this pool (its present ranks)."""


class InsufficientResources(OSError):
    """Not enough resources are up and free right now; retry after a free event."""


#: A grant: pool index -> (core mask, GPU mask).
Grant = dict[int, tuple[int, int]]
#: Yields (index, free core mask, free GPU mask) in worst-fit order.
CandidateSource = Callable[[int, int, bool], Iterator[tuple[int, int, int]]]

_BucketKey = tuple[int, int]  # (-free cores, -free GPUs): ascending order is worst-fit order


@dataclass
class _Job:
    end: float
    result: ResourcePool
    grant: Grant  # what the job still holds, by pool index


def _lowest_bits(mask: int, count: int) -> int:
    """The ``count`` lowest set bits of ``mask``."""
    if count <= 0:
        return 0
    if mask.bit_count() <= count:
        return mask
    taken = 0
    for _ in range(count):
        low = mask & -mask
        taken |= low
        mask ^= low
    return taken


def mask_from_indices(indices: Iterable[int], size: int) -> int:
    """An int with the given bits set, built in O(size) (OR-ing bit by bit is quadratic)."""
    bitmap = bytearray((size + 7) // 8)
    for index in indices:
        bitmap[index >> 3] |= 1 << (index & 7)
    return int.from_bytes(bitmap, "little")


_CHUNK_BITS = 1024
_CHUNK_MASK = (1 << _CHUNK_BITS) - 1


def iter_bits(mask: int) -> Iterator[int]:
    """Set bit positions of ``mask``, ascending.

    Works on 1024-bit chunks so that a dense mask over many ranks costs small-int
    operations per bit, not a copy of the whole mask per bit.
    """
    for _ in range(8):  # the common case: a consumer that stops after a few candidates
        if not mask:
            return
        low = mask & -mask
        mask ^= low
        yield low.bit_length() - 1
    offset = 0
    while mask:
        skip = (mask & -mask).bit_length() - 1
        if skip:
            mask >>= skip
            offset += skip
        chunk = mask & _CHUNK_MASK
        mask >>= _CHUNK_BITS
        base = offset
        offset += _CHUNK_BITS
        while chunk:
            low = chunk & -chunk
            chunk ^= low
            yield base + low.bit_length() - 1


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of epoch seconds, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return result


def select(
    request: ResourceRequest, candidates: CandidateSource
) -> tuple[list[tuple[int, int, int]], int] | None:
    """Flux's selection over a worst-fit candidate stream.

    Returns ``([(index, cores, gpus), ...], nslots)`` or ``None`` when it comes up short.
    """
    size = request.slot_size
    gpu = request.gpu_per_slot
    chosen: list[tuple[int, int, int]] = []
    if request.node_count is not None:
        per_node = request.slot_count.min
        need_cores = per_node * size
        need_gpus = per_node * gpu
        want_min = max(request.nnodes, 1)
        want_max = request.nnodes_max
        for index, free_cores, free_gpus in candidates(need_cores, need_gpus, request.exclusive):
            if request.exclusive:
                chosen.append((index, free_cores, free_gpus))
            else:
                chosen.append(
                    (
                        index,
                        _lowest_bits(free_cores, need_cores),
                        _lowest_bits(free_gpus, need_gpus),
                    )
                )
            if want_max is not None and len(chosen) >= want_max:
                break
        if len(chosen) < want_min:
            return None
        return chosen, per_node * len(chosen)
    want_min = request.slot_count.min
    want_max_slots = request.slot_count.max
    granted = 0
    for index, free_cores, free_gpus in candidates(size, gpu, False):
        fits = free_cores.bit_count() // size
        if gpu:
            fits = min(fits, free_gpus.bit_count() // gpu)
        if want_max_slots is not None:
            fits = min(fits, want_max_slots - granted)
        if fits <= 0:
            continue
        chosen.append(
            (index, _lowest_bits(free_cores, fits * size), _lowest_bits(free_gpus, fits * gpu))
        )
        granted += fits
        if want_max_slots is not None and granted >= want_max_slots:
            break
    if granted < want_min:
        return None
    return chosen, granted


class ResourcePool:
    """A Flux-compatible resource pool over an R v1 resource set.

    ``ResourcePool(R)`` takes an R v1 dict or JSON string (or a ``ResourceSet`` or another
    pool, which is copied). See docs/engine.md for the semantics and the deliberate
    deviations from Flux's ``Rv1Pool``.
    """

    InfeasibleRequest = InfeasibleRequest
    InsufficientResources = InsufficientResources

    # every grant is a ResourcePool and a planner may hold tens of thousands of them
    __slots__ = (
        "_buckets",
        "_constraint_cache",
        "_core_alloc",
        "_core_total",
        "_dumps_memo",
        "_expiration",
        "_generation",
        "_gpu_alloc",
        "_gpu_total",
        "_has_nodelist",
        "_host_masks",
        "_hostnames",
        "_index",
        "_jobs",
        "_keys",
        "_ncores",
        "_ngpus",
        "_nslots",
        "_present",
        "_props",
        "_rank_key",
        "_ranks",
        "_scheduling",
        "_starttime",
        "_total_buckets",
        "_total_keys",
        "_up",
        "log",
    )

    # topology (index space)
    _ranks: list[int]
    _index: dict[int, int]
    _core_total: list[int]
    _gpu_total: list[int]
    _ncores: list[int]
    _ngpus: list[int]
    _hostnames: list[str]
    _has_nodelist: bool
    _props: dict[str, int]
    _present: int
    # state
    _core_alloc: list[int]
    _gpu_alloc: list[int]
    _up: int
    _jobs: dict[Hashable, _Job]
    _generation: int
    _starttime: float
    _expiration: float
    _nslots: int
    _scheduling: dict[str, Any] | None
    # lazily built indexes
    _buckets: dict[_BucketKey, int] | None
    _keys: list[_BucketKey]
    _rank_key: list[_BucketKey | None]
    _total_buckets: dict[_BucketKey, int] | None
    _total_keys: list[_BucketKey]
    _host_masks: dict[str, int] | None
    _constraint_cache: dict[str, int]

    def __init__(
        self, arg: object = None, version: int = 1, log: Any = None, **kwargs: Any
    ) -> None:
        if version != 1:
            raise ValueError(f"ResourcePool: unsupported R version {version!r} (only 1)")
        self.log = log
        if isinstance(arg, ResourcePool):
            arg._copy_into(self)
            return
        if arg is None:
            rv1 = Rv1()
        elif isinstance(arg, ResourceSet):
            rv1 = arg._rv1
        elif isinstance(arg, str | bytes | bytearray | Mapping):
            rv1 = parse_rv1(arg)
        else:
            raise TypeError(
                f"ResourcePool: expected an R v1 dict or JSON string, got {type(arg).__name__}"
            )
        ranks = rv1.ranks
        props: dict[str, int] = {}
        for name, prop_ranks in rv1.properties.items():
            # property ranks are a subset of the ranks, so a run of consecutive ranks is a
            # run of consecutive indices
            mask = 0
            for lo, hi in prop_ranks.intervals:
                start = bisect_left(ranks, lo)
                mask |= ((1 << (hi - lo + 1)) - 1) << start
            props[name] = mask
        self._init_arrays(
            ranks,
            [rv1.cores[r] for r in ranks],
            [rv1.gpus[r] for r in ranks],
            [rv1.hostname(r) for r in ranks],
            rv1.has_nodelist,
            props,
        )
        self._starttime = rv1.starttime
        self._expiration = rv1.expiration
        self._nslots = rv1.nslots
        self._scheduling = rv1.scheduling

    def _init_arrays(
        self,
        ranks: list[int],
        cores: list[int],
        gpus: list[int],
        hostnames: list[str],
        has_nodelist: bool,
        props: dict[str, int],
    ) -> None:
        count = len(ranks)
        self._ranks = ranks
        self._index = {rank: i for i, rank in enumerate(ranks)}
        self._core_total = cores
        self._gpu_total = gpus
        self._ncores = [mask.bit_count() for mask in cores]
        self._ngpus = [mask.bit_count() for mask in gpus]
        self._hostnames = hostnames
        self._has_nodelist = has_nodelist
        self._props = props
        self._present = (1 << count) - 1
        self._dumps_memo: tuple[int, str] | None = None
        self._core_alloc = [0] * count
        self._gpu_alloc = [0] * count
        self._up = self._present
        self._jobs = {}
        self._generation = 0
        self._starttime = 0.0
        self._expiration = 0.0
        self._nslots = 0
        self._scheduling = None
        self._buckets = None
        self._keys = []
        self._rank_key = []
        self._total_buckets = None
        self._total_keys = []
        self._host_masks = None
        self._constraint_cache = {}
        self.log = getattr(self, "log", None)

    # -- indexes -----------------------------------------------------------------------

    def _ensure_buckets(self) -> dict[_BucketKey, int]:
        if self._buckets is None:
            members: dict[_BucketKey, list[int]] = {}
            size = len(self._ranks)
            rank_key: list[_BucketKey | None] = [None] * size
            for i in iter_bits(self._present):
                key = (
                    -(self._ncores[i] - self._core_alloc[i].bit_count()),
                    -(self._ngpus[i] - self._gpu_alloc[i].bit_count()),
                )
                rank_key[i] = key
                members.setdefault(key, []).append(i)
            self._buckets = {key: mask_from_indices(idx, size) for key, idx in members.items()}
            self._keys = sorted(self._buckets)
            self._rank_key = rank_key
        return self._buckets

    def _ensure_total_buckets(self) -> dict[_BucketKey, int]:
        if self._total_buckets is None:
            members: dict[_BucketKey, list[int]] = {}
            for i in iter_bits(self._present):
                members.setdefault((-self._ncores[i], -self._ngpus[i]), []).append(i)
            size = len(self._ranks)
            self._total_buckets = {
                key: mask_from_indices(idx, size) for key, idx in members.items()
            }
            self._total_keys = sorted(self._total_buckets)
        return self._total_buckets

    def _idle_mask(self) -> int:
        """Ranks with nothing allocated: their free key equals their capacity class."""
        totals = self._ensure_total_buckets()
        free_buckets = self._ensure_buckets()
        idle = 0
        for key, members in totals.items():
            idle |= members & free_buckets.get(key, 0)
        return idle

    def _refresh_all(self, indices: Iterable[int]) -> None:
        """Re-file many ranks; past a few, in one pass per bucket instead of per rank."""
        batch = list(indices)
        if len(batch) <= 16 or self._buckets is None:
            for index in batch:
                self._refresh(index)
            return
        buckets = self._buckets
        leaving: dict[_BucketKey, list[int]] = {}
        arriving: dict[_BucketKey, list[int]] = {}
        for index in batch:
            key = (
                -(self._ncores[index] - self._core_alloc[index].bit_count()),
                -(self._ngpus[index] - self._gpu_alloc[index].bit_count()),
            )
            old = self._rank_key[index]
            if old == key:
                continue
            if old is not None:
                leaving.setdefault(old, []).append(index)
            arriving.setdefault(key, []).append(index)
            self._rank_key[index] = key
        size = len(self._ranks)
        for key, members in leaving.items():
            remaining = buckets[key] ^ mask_from_indices(members, size)
            if remaining:
                buckets[key] = remaining
            else:
                del buckets[key]
        for key, members in arriving.items():
            buckets[key] = buckets.get(key, 0) | mask_from_indices(members, size)
        self._keys = sorted(buckets)

    def _refresh(self, index: int) -> None:
        """Re-file rank ``index`` after its allocation changed."""
        buckets = self._buckets
        if buckets is None:
            return
        key = (
            -(self._ncores[index] - self._core_alloc[index].bit_count()),
            -(self._ngpus[index] - self._gpu_alloc[index].bit_count()),
        )
        old = self._rank_key[index]
        if old == key:
            return
        bit = 1 << index
        if old is not None:
            remaining = buckets[old] ^ bit
            if remaining:
                buckets[old] = remaining
            else:
                del buckets[old]
                del self._keys[bisect_left(self._keys, old)]
        if key in buckets:
            buckets[key] |= bit
        else:
            buckets[key] = bit
            insort(self._keys, key)
        self._rank_key[index] = key

    # -- constraint context --------------------------------------------------------------

    def _all_mask(self) -> int:
        return self._present

    def _property_mask(self, name: str) -> int:
        return self._props.get(name, 0) & self._present

    def _hostname_mask(self, hosts: Hostlist) -> int:
        if self._host_masks is None:
            masks: dict[str, int] = {}
            for i, name in enumerate(self._hostnames):
                masks[name] = masks.get(name, 0) | (1 << i)  # names are (nearly) unique
            self._host_masks = masks
        mask = 0
        for name in hosts:
            mask |= self._host_masks.get(name, 0)
        return mask & self._present

    def _ranks_mask(self, ranks: IDset) -> int:
        mask = 0
        for lo, hi in ranks.intervals:
            start = bisect_left(self._ranks, lo)
            stop = bisect_right(self._ranks, hi)
            if stop > start:
                mask |= ((1 << (stop - start)) - 1) << start
        return mask & self._present

    def _constraint_mask(self, constraint: Mapping[str, Any] | None) -> int:
        if not constraint:
            return self._present
        key = json.dumps(constraint, sort_keys=True)
        mask = self._constraint_cache.get(key)
        if mask is None:
            validate_constraint(constraint)
            mask = evaluate_constraint(constraint, self)
            if len(self._constraint_cache) >= 256:
                self._constraint_cache.clear()
            self._constraint_cache[key] = mask
        return mask & self._present

    def _ids_mask(self, ids: object) -> int:
        """Index mask for ``"all"``, an idset string, an IDset, an int or ints."""
        if isinstance(ids, str):
            if ids == "all":
                return self._present
            ranks = IDset(ids)
        elif isinstance(ids, IDset):
            ranks = ids
        elif isinstance(ids, int) and not isinstance(ids, bool):
            ranks = IDset(ids)
        elif isinstance(ids, Iterable):
            ranks = IDset(list(ids))
        else:
            raise ValueError(f"expected 'all' or an idset, got {ids!r}")
        return self._ranks_mask(ranks)

    def _mask_ranks(self, mask: int) -> list[int]:
        ranks = self._ranks
        return [ranks[i] for lo, hi in IDset.from_mask(mask).intervals for i in range(lo, hi + 1)]

    # -- candidate streams ---------------------------------------------------------------

    def _pool_candidates(self, eligible: int) -> CandidateSource:
        def candidates(
            need_cores: int, need_gpus: int, idle_only: bool
        ) -> Iterator[tuple[int, int, int]]:
            core_total, gpu_total = self._core_total, self._gpu_total
            if idle_only:
                # an idle rank is one whose free key equals its capacity class
                totals = self._ensure_total_buckets()
                free_buckets = self._ensure_buckets()
                for key in self._total_keys:
                    if -key[0] < need_cores:
                        break
                    if -key[1] < need_gpus:
                        continue
                    members = totals[key] & free_buckets.get(key, 0) & eligible
                    for index in iter_bits(members):
                        yield index, core_total[index], gpu_total[index]
                return
            buckets = self._ensure_buckets()
            core_alloc, gpu_alloc = self._core_alloc, self._gpu_alloc
            for key in list(self._keys):
                if -key[0] < need_cores:
                    break
                if -key[1] < need_gpus:
                    continue
                members = buckets[key] & eligible
                for index in iter_bits(members):
                    yield (
                        index,
                        core_total[index] & ~core_alloc[index],
                        gpu_total[index] & ~gpu_alloc[index],
                    )

        return candidates

    # -- requests ------------------------------------------------------------------------

    def parse_resource_request(self, jobspec: Mapping[str, Any]) -> ResourceRequest:
        """Parse a jobspec v1 into a ``ResourceRequest``; pool state is untouched."""
        return parse_jobspec(jobspec)

    def _coerce_request(self, request: object) -> ResourceRequest:
        if isinstance(request, ResourceRequest):
            return request
        if isinstance(request, Mapping):
            return parse_jobspec(request)
        raise TypeError(
            f"expected a ResourceRequest or a jobspec dict, got {type(request).__name__}"
        )

    def _feasibility_error(self, request: ResourceRequest, eligible: int) -> str | None:
        """Why ``request`` can never fit the present ranks in ``eligible``, or None."""
        if request.is_discrete:
            return (
                f"unsatisfiable request: counts with discrete valid values are not supported "
                f"({request})"
            )
        buckets = self._ensure_total_buckets()
        size, gpu = request.slot_size, request.gpu_per_slot
        if request.node_count is not None:
            per_node = request.slot_count.min
            need_cores, need_gpus = per_node * size, per_node * gpu
            want = max(request.nnodes, 1)
            found = 0
            for key in self._total_keys:
                if -key[0] < need_cores:
                    break
                if -key[1] < need_gpus:
                    continue
                found += (buckets[key] & eligible).bit_count()
                if found >= want:
                    return None
            gpus = f" and {need_gpus} GPUs" if need_gpus else ""
            return (
                f"unsatisfiable request: need {want} node(s) with {need_cores} cores{gpus} "
                f"each, pool has {found}"
            )
        slots = 0
        for key in self._total_keys:
            members = (buckets[key] & eligible).bit_count()
            if not members:
                continue
            per_rank = -key[0] // size
            if gpu:
                per_rank = min(per_rank, -key[1] // gpu)
            slots += per_rank * members
        if slots >= request.nslots:
            return None
        gpus = f" and {gpu} GPUs" if gpu else ""
        return (
            f"unsatisfiable request: need {request.nslots} slot(s) of {size} cores{gpus}, "
            f"pool can hold {slots}"
        )

    def check_feasibility(self, request: object) -> None:
        """``InfeasibleRequest`` if the request can never fit the present ranks."""
        req = self._coerce_request(request)
        eligible = self._constraint_mask(req.constraint)
        reason = self._feasibility_error(req, eligible)
        if reason is not None:
            raise InfeasibleRequest(reason)

    def alloc(self, jobid: Hashable, request: object) -> ResourcePool:
        """Allocate for ``jobid``; returns a pool holding only the granted resources."""
        req = self._coerce_request(request)
        job = self._jobs.get(jobid)
        if job is not None and job.grant:
            raise ValueError(
                f"job {jobid!r} still holds resources ({job.result.dumps()}); free it first"
            )
        eligible = self._constraint_mask(req.constraint) & self._up
        selection = None if req.is_discrete else select(req, self._pool_candidates(eligible))
        if selection is None:
            reason = self._feasibility_error(req, self._constraint_mask(req.constraint))
            if reason is not None:
                raise InfeasibleRequest(reason)
            raise InsufficientResources("insufficient resources")
        chosen, nslots = selection
        grant: Grant = {}
        for index, cores, gpus in chosen:
            self._core_alloc[index] |= cores
            self._gpu_alloc[index] |= gpus
            grant[index] = (cores, gpus)
        self._refresh_all(grant)
        result = self._child(grant, nslots)
        if req.duration > 0:
            end = time.time() + req.duration
        else:
            end = self._expiration if self._expiration > 0 else 0.0
        self._jobs[jobid] = _Job(end, result, grant)
        self._generation += 1
        return result

    def _child(self, grant: Grant, nslots: int) -> ResourcePool:
        """A new pool holding exactly ``grant`` (the allocation R)."""
        indices = sorted(grant)
        child = ResourcePool.__new__(ResourcePool)
        props: dict[str, int] = {}
        if self._props:
            granted = mask_from_indices(indices, len(self._ranks))
            position = {index: pos for pos, index in enumerate(indices)}
            for name, mask in self._props.items():
                if name.startswith("+"):
                    continue  # instance-local: never part of a job's R
                hits = mask & granted
                if hits:
                    props[name] = mask_from_indices(
                        (position[i] for i in iter_bits(hits)), len(indices)
                    )
        child._init_arrays(
            [self._ranks[i] for i in indices],
            [grant[i][0] for i in indices],
            [grant[i][1] for i in indices],
            [self._hostnames[i] for i in indices],
            True,
            props,
        )
        child._nslots = nslots
        child._scheduling = self._scheduling
        return child

    # -- parsing other R into this pool's index space ------------------------------------

    def _grant_from(self, R: object, what: str) -> tuple[Grant, ResourcePool]:
        """Map an allocation R onto this pool; ``ValueError`` for anything not in it."""
        source = R if isinstance(R, ResourcePool) else ResourcePool(R)
        grant: Grant = {}
        missing: list[int] = []
        for i in iter_bits(source._present):
            rank = source._ranks[i]
            index = self._index.get(rank)
            if index is None:
                missing.append(rank)
                continue
            cores, gpus = source._core_total[i], source._gpu_total[i]
            extra_cores = cores & ~self._core_total[index]
            extra_gpus = gpus & ~self._gpu_total[index]
            if extra_cores or extra_gpus:
                parts = []
                if extra_cores:
                    parts.append(f"core{IDset.from_mask(extra_cores).encode(brackets=True)}")
                if extra_gpus:
                    parts.append(f"gpu{IDset.from_mask(extra_gpus).encode(brackets=True)}")
                raise ValueError(f"{what} names resources not in rank {rank}: {','.join(parts)}")
            grant[index] = (cores, gpus)
        if missing:
            raise ValueError(f"allocation contains ranks not in resource pool: {missing}")
        return grant, source

    def _overlap(self, grant: Grant) -> str | None:
        clashes = []
        for index, (cores, gpus) in sorted(grant.items()):
            core_clash = cores & self._core_alloc[index]
            gpu_clash = gpus & self._gpu_alloc[index]
            if core_clash or gpu_clash:
                parts = []
                if core_clash:
                    parts.append(f"core{IDset.from_mask(core_clash).encode(brackets=True)}")
                if gpu_clash:
                    parts.append(f"gpu{IDset.from_mask(gpu_clash).encode(brackets=True)}")
                clashes.append(f"rank{self._ranks[index]}/{','.join(parts)}")
        return " ".join(clashes) if clashes else None

    def register_alloc(self, jobid: Hashable, R: object) -> None:
        """Register an existing allocation (scheduler restart). Refuses overlaps."""
        grant, source = self._grant_from(R, "allocation")
        job = self._jobs.get(jobid)
        if job is not None and job.grant:
            raise ValueError(f"job {jobid!r} still holds resources ({job.result.dumps()})")
        clash = self._overlap(grant)
        if clash is not None:
            raise ValueError(f"allocation for job {jobid!r} overlaps allocated resources: {clash}")
        for index, (cores, gpus) in grant.items():
            self._core_alloc[index] |= cores
            self._gpu_alloc[index] |= gpus
        self._refresh_all(grant)
        self._jobs[jobid] = _Job(source._expiration, source, grant)
        self._generation += 1

    def _release(self, grant: Grant) -> None:
        touched = []
        for index, (cores, gpus) in grant.items():
            if self._ranks[index] not in self._index:
                continue  # removed rank: nothing to return
            self._core_alloc[index] &= ~cores
            self._gpu_alloc[index] &= ~gpus
            touched.append(index)
        self._refresh_all(touched)

    def free(self, jobid: Hashable, R: object = None, final: bool = False) -> None:
        """Return a job's resources: all of them (``R=None`` or ``final``) or ``R`` only."""
        job = self._jobs.get(jobid)
        grant: Grant | None = None
        if R is not None:
            grant = self._grant_from_free(R)
            if job is not None:
                outside = [self._ranks[i] for i in grant if i not in job.grant]
                if outside:
                    raise ValueError(f"R contains ranks not in job allocation: {outside}")
                for index, (cores, gpus) in grant.items():
                    held_cores, held_gpus = job.grant[index]
                    if cores & ~held_cores or gpus & ~held_gpus:
                        raise ValueError(
                            f"R contains resources not in job allocation on rank {self._ranks[index]}"
                        )
                if final and grant != job.grant:
                    raise ValueError(
                        f"final R mismatch: got {self._grant_dumps(grant)!r}, "
                        f"expected {self._grant_dumps(job.grant)!r}"
                    )
        if final or grant is None:
            if job is None:
                return
            self._release(job.grant)
            del self._jobs[jobid]
            self._generation += 1
            return
        # partial free
        self._release(grant)
        if job is not None:
            for index, (cores, gpus) in grant.items():
                held_cores, held_gpus = job.grant[index]
                remaining = (held_cores & ~cores, held_gpus & ~gpus)
                if remaining == (0, 0):
                    del job.grant[index]
                else:
                    job.grant[index] = remaining
        self._generation += 1

    def _grant_from_free(self, R: object) -> Grant:
        """Like ``_grant_from`` but ranks no longer in the pool are skipped (removed)."""
        source = R if isinstance(R, ResourcePool) else ResourcePool(R)
        grant: Grant = {}
        for i in iter_bits(source._present):
            index = self._index.get(source._ranks[i])
            if index is not None:
                grant[index] = (
                    source._core_total[i] & self._core_total[index],
                    source._gpu_total[i] & self._gpu_total[index],
                )
        return grant

    def _grant_dumps(self, grant: Grant) -> str:
        ranks = [self._ranks[i] for i in sorted(grant)]
        cores = {self._ranks[i]: grant[i][0] for i in grant}
        gpus = {self._ranks[i]: grant[i][1] for i in grant}
        return dumps_groups(group_ranks(ranks, cores, gpus))

    def update_expiration(self, jobid: Hashable, expiration: float) -> None:
        """Set a tracked job's end time (bumps); unknown jobs are ignored."""
        value = _check_time(expiration, "expiration")
        job = self._jobs.get(jobid)
        if job is None:
            return
        job.end = value
        self._generation += 1

    def job_end_times(self) -> list[tuple[Hashable, float]]:
        return [(jobid, job.end) for jobid, job in self._jobs.items()]

    # -- up/down and shrink --------------------------------------------------------------

    def mark_down(self, ids: object) -> None:
        mask = self._ids_mask(ids)
        self._up &= ~mask
        self._generation += 1

    def mark_up(self, ids: object) -> None:
        mask = self._ids_mask(ids)
        self._up |= mask & self._present
        self._generation += 1

    def remove_ranks(self, ranks: object) -> None:
        mask = self._ids_mask(ranks)
        keep = ~mask
        for index in iter_bits(mask):
            if self._rank_key:
                self._rank_key[index] = None
            self._core_alloc[index] = 0
            self._gpu_alloc[index] = 0
            del self._index[self._ranks[index]]
        # bulk: one pass over the bucket masks, not one per removed rank
        if self._buckets is not None:
            self._buckets = {k: m & keep for k, m in self._buckets.items() if m & keep}
            self._keys = sorted(self._buckets)
        if self._total_buckets is not None:
            totals = {k: m & keep for k, m in self._total_buckets.items() if m & keep}
            self._total_buckets = totals
            self._total_keys = sorted(totals)
        removed = set(iter_bits(mask))
        for job in self._jobs.values():
            # gone with the rank: nothing is left to free there, and a final free's R
            # (which cannot name a removed rank) must still match what the job holds
            for index in [i for i in job.grant if i in removed]:
                del job.grant[index]
        self._present &= keep
        self._up &= keep
        self._props = {name: m & keep for name, m in self._props.items() if m & keep}
        self._constraint_cache.clear()
        self._generation += 1

    # -- times ---------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Monotonically increasing mutation counter."""
        return self._generation

    @property
    def expiration(self) -> float:
        return self._expiration

    @expiration.setter
    def expiration(self, value: float) -> None:
        self._expiration = _check_time(value, "expiration")

    def set_expiration(self, expiration: float) -> None:
        self._expiration = _check_time(expiration, "expiration")

    def set_starttime(self, starttime: float) -> None:
        self._starttime = _check_time(starttime, "starttime")

    @property
    def starttime(self) -> float:
        return self._starttime

    # -- views ---------------------------------------------------------------------------

    @property
    def ranks(self) -> IDset:
        return IDset(self._mask_ranks(self._present))

    @property
    def nodelist(self) -> Hostlist:
        hostnames = self._hostnames
        return Hostlist([hostnames[i] for i in self._indices(self._present)])

    @property
    def nslots(self) -> int:
        return self._nslots

    def _indices(self, mask: int) -> list[int]:
        return list(iter_bits(mask))

    def count(self, kind: str) -> int:
        """Total present nodes, cores or GPUs."""
        indices = self._indices(self._present)
        if kind in ("node", "rank"):
            return len(indices)
        if kind == "core":
            return sum(self._ncores[i] for i in indices)
        if kind == "gpu":
            return sum(self._ngpus[i] for i in indices)
        raise ValueError(f"unknown resource type {kind!r}")

    def _rv1_view(
        self,
        mask: int,
        cores: Callable[[int], int],
        gpus: Callable[[int], int],
        *,
        nodelist: bool,
        properties: bool,
        times: bool = False,
    ) -> Rv1:
        indices = self._indices(mask)
        rv1 = Rv1()
        rv1.ranks = [self._ranks[i] for i in indices]
        rv1.cores = {self._ranks[i]: cores(i) for i in indices}
        rv1.gpus = {self._ranks[i]: gpus(i) for i in indices}
        if nodelist:
            rv1.has_nodelist = True
            rv1.hostnames = {self._ranks[i]: self._hostnames[i] for i in indices}
        if properties:
            for name, prop_mask in self._props.items():
                if prop_mask & mask:
                    rv1.properties[name] = IDset(self._mask_ranks(prop_mask & mask))
        if times:
            rv1.starttime = self._starttime
            rv1.expiration = self._expiration
            rv1.nslots = self._nslots
            rv1.scheduling = self._scheduling
        return rv1

    def copy_allocated(self) -> ResourceSet:
        """Ranks with anything allocated (down ones too), showing only the allocated IDs."""
        mask = self._present & ~self._idle_mask()
        return ResourceSet(
            self._rv1_view(
                mask,
                lambda i: self._core_alloc[i],
                lambda i: self._gpu_alloc[i],
                nodelist=False,
                properties=True,
            )
        )

    def copy_down(self) -> ResourceSet:
        """The down ranks with their full topology."""
        mask = self._present & ~self._up
        return ResourceSet(
            self._rv1_view(
                mask,
                lambda i: self._core_total[i],
                lambda i: self._gpu_total[i],
                nodelist=False,
                properties=False,
            )
        )

    def to_resource_set(self) -> ResourceSet:
        """All ranks: topology, properties and nodelist; no up/down or allocation state."""
        return ResourceSet(
            self._rv1_view(
                self._present,
                lambda i: self._core_total[i],
                lambda i: self._gpu_total[i],
                nodelist=self._has_nodelist,
                properties=True,
                times=True,
            )
        )

    def dumps(self) -> str:
        # Kept while the present ranks are the same (their totals never change): the pool's
        # status writes it once per interval, and on 16,384 ranks it costs ~10-20 ms.
        memo = self._dumps_memo
        if memo is not None and memo[0] == self._present:
            return memo[1]
        indices = self._indices(self._present)
        groups: dict[tuple[int, int], list[int]] = {}
        for i in indices:
            groups.setdefault((self._core_total[i], self._gpu_total[i]), []).append(self._ranks[i])
        text = dumps_groups([(IDset(members), c, g) for (c, g), members in groups.items()])
        self._dumps_memo = (self._present, text)
        return text

    def to_dict(self) -> dict[str, Any]:
        indices = self._indices(self._present)
        ranks = [self._ranks[i] for i in indices]
        return encode_rv1(
            ranks,
            {self._ranks[i]: self._core_total[i] for i in indices},
            {self._ranks[i]: self._gpu_total[i] for i in indices},
            hostnames=[self._hostnames[i] for i in indices] if self._has_nodelist else None,
            properties={
                name: IDset(self._mask_ranks(mask & self._present))
                for name, mask in self._props.items()
            },
            starttime=self._starttime,
            expiration=self._expiration,
            nslots=self._nslots,
            scheduling=self._scheduling,
        )

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __str__(self) -> str:
        return self.dumps()

    def __repr__(self) -> str:
        return f"ResourcePool({self.dumps()!r})"

    # -- copies --------------------------------------------------------------------------

    def _copy_into(self, other: ResourcePool) -> None:
        other._ranks = self._ranks  # never mutated after construction
        other._index = dict(self._index)
        other._core_total = self._core_total  # never mutated after construction
        other._gpu_total = self._gpu_total
        other._ncores = self._ncores
        other._ngpus = self._ngpus
        other._hostnames = self._hostnames
        other._has_nodelist = self._has_nodelist
        other._props = dict(self._props)
        other._present = self._present
        other._dumps_memo = self._dumps_memo
        other._core_alloc = list(self._core_alloc)
        other._gpu_alloc = list(self._gpu_alloc)
        other._up = self._up
        other._jobs = {
            jobid: _Job(job.end, job.result, dict(job.grant)) for jobid, job in self._jobs.items()
        }
        other._generation = self._generation
        other._starttime = self._starttime
        other._expiration = self._expiration
        other._nslots = self._nslots
        other._scheduling = self._scheduling
        if self._buckets is not None:
            other._buckets = dict(self._buckets)
            other._keys = list(self._keys)
            other._rank_key = list(self._rank_key)
        else:
            other._buckets = None
            other._keys = []
            other._rank_key = []
        if self._total_buckets is not None:
            other._total_buckets = dict(self._total_buckets)
            other._total_keys = list(self._total_keys)
        else:
            other._total_buckets = None
            other._total_keys = []
        other._host_masks = self._host_masks
        other._constraint_cache = dict(self._constraint_cache)

    def copy(self) -> ResourcePool:
        """An independent copy of the allocation state (keeps ``generation``; drops the log)."""
        other = ResourcePool.__new__(ResourcePool)
        other.log = None
        self._copy_into(other)
        return other

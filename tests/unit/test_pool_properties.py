"""Property tests: the indexed ResourcePool against a direct transcription of Flux's
algorithm (rebuild the candidate list, stable-sort it, select), over random sequences of
alloc / free / mark_down / mark_up / register_alloc / remove_ranks.

Checked after every step: no core or GPU is granted twice, the pool's allocated set is
exactly the union of what its jobs hold, free restores exactly what was granted, grants and
errors equal the reference model's, to_dict() round-trips, generation never decreases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from respool.pool import (
    IDset,
    InfeasibleRequest,
    InsufficientResources,
    ResourcePool,
    jobspec_from_shorthand,
    parse_jobspec,
)
from respool.pool.jobspec import ResourceRequest
from respool.pool.resource_pool import iter_bits, mask_from_indices

PROPERTIES = ("red", "big", "+local")


# -- the reference model -----------------------------------------------------------------


@dataclass
class Model:
    cores: dict[int, set[int]]
    gpus: dict[int, set[int]]
    hosts: dict[int, str]
    props: dict[str, set[int]]
    up: set[int] = field(default_factory=set)
    alloc_cores: dict[int, set[int]] = field(default_factory=dict)
    alloc_gpus: dict[int, set[int]] = field(default_factory=dict)
    jobs: dict[int, dict[int, tuple[set[int], set[int]]]] = field(default_factory=dict)

    def matches(self, constraint: dict[str, Any] | None, rank: int) -> bool:
        if not constraint:
            return True
        for key, value in constraint.items():
            if key == "properties":
                for prop in value:
                    if prop.startswith("^"):
                        if rank in self.props.get(prop[1:], set()):
                            return False
                    elif rank not in self.props.get(prop, set()):
                        return False
            elif key == "ranks":
                if not any(rank in IDset(text) for text in value):
                    return False
            elif key == "hostlist":
                if self.hosts[rank] not in value:
                    return False
            elif key == "and":
                if not all(self.matches(c, rank) for c in value):
                    return False
            elif key == "or":
                if value and not any(self.matches(c, rank) for c in value):
                    return False
            elif key == "not" and all(self.matches(c, rank) for c in value):
                return False
        return True

    def feasible(self, req: ResourceRequest) -> bool:
        ranks = [r for r in sorted(self.cores) if self.matches(req.constraint, r)]
        size, gpu = req.slot_size, req.gpu_per_slot
        if req.node_count is not None:
            spn = req.slot_count.min
            ok = [
                r
                for r in ranks
                if len(self.cores[r]) >= spn * size and len(self.gpus[r]) >= spn * gpu
            ]
            return len(ok) >= max(req.nnodes, 1)
        total = 0
        for r in ranks:
            n = len(self.cores[r]) // size
            if gpu:
                n = min(n, len(self.gpus[r]) // gpu)
            total += n
        return total >= req.nslots

    def select(self, req: ResourceRequest) -> dict[int, tuple[set[int], set[int]]] | None:
        size, gpu = req.slot_size, req.gpu_per_slot
        spn = req.slot_count.min
        candidates = []
        for r in sorted(self.cores):
            if r not in self.up or not self.matches(req.constraint, r):
                continue
            free_c = self.cores[r] - self.alloc_cores[r]
            free_g = self.gpus[r] - self.alloc_gpus[r]
            if req.exclusive:
                idle = not self.alloc_cores[r] and not self.alloc_gpus[r]
                if not idle or len(free_c) < spn * size or len(free_g) < spn * gpu:
                    continue
            elif req.node_count is not None:
                if len(free_c) < spn * size or len(free_g) < spn * gpu:
                    continue
            elif len(free_c) < size or len(free_g) < gpu:
                continue
            candidates.append((r, free_c, free_g))
        candidates.sort(key=lambda c: (-len(c[1]), -len(c[2])))  # stable: ties keep rank order
        grant: dict[int, tuple[set[int], set[int]]] = {}
        if req.node_count is not None:
            want_max = req.nnodes_max
            for r, free_c, free_g in candidates:
                if req.exclusive:
                    grant[r] = (set(free_c), set(free_g))
                else:
                    grant[r] = (set(sorted(free_c)[: spn * size]), set(sorted(free_g)[: spn * gpu]))
                if want_max is not None and len(grant) >= want_max:
                    break
            return grant if len(grant) >= max(req.nnodes, 1) else None
        granted = 0
        want = req.slot_count.max
        for r, free_c, free_g in candidates:
            n = len(free_c) // size
            if gpu:
                n = min(n, len(free_g) // gpu)
            if want is not None:
                n = min(n, want - granted)
            if n <= 0:
                continue
            grant[r] = (set(sorted(free_c)[: n * size]), set(sorted(free_g)[: n * gpu]))
            granted += n
            if want is not None and granted >= want:
                break
        return grant if granted >= req.slot_count.min else None

    def take(self, grant: dict[int, tuple[set[int], set[int]]]) -> None:
        for r, (c, g) in grant.items():
            self.alloc_cores[r] |= c
            self.alloc_gpus[r] |= g

    def give_back(self, grant: dict[int, tuple[set[int], set[int]]]) -> None:
        for r, (c, g) in grant.items():
            if r in self.cores:
                self.alloc_cores[r] -= c
                self.alloc_gpus[r] -= g


def pool_grant(pool: ResourcePool) -> dict[int, tuple[set[int], set[int]]]:
    rs = pool.to_resource_set()
    return {r: (set(rs.cores(r)), set(rs.gpus(r))) for r in rs.ranks}


def grant_R(grant: dict[int, tuple[set[int], set[int]]]) -> dict[str, Any]:
    lite = []
    for r, (c, g) in sorted(grant.items()):
        children = {"core": str(IDset(sorted(c)))}
        if g:
            children["gpu"] = str(IDset(sorted(g)))
        lite.append({"rank": str(r), "children": children})
    return {"version": 1, "execution": {"R_lite": lite}}


# -- strategies --------------------------------------------------------------------------

rank_sets = st.sets(st.integers(0, 7), max_size=4).map(lambda s: ",".join(map(str, sorted(s))))

leaf_constraints = st.one_of(
    st.lists(st.sampled_from(["red", "^red", "big", "^big", "+local"]), max_size=2).map(
        lambda props: {"properties": props}
    ),
    st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, max_size=3).map(
        lambda hosts: {"hostlist": hosts}
    ),
    rank_sets.filter(bool).map(lambda ranks: {"ranks": [ranks]}),
)
constraints = st.recursive(
    leaf_constraints,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2).map(lambda ops: {"and": ops}),
        st.lists(inner, max_size=2).map(lambda ops: {"or": ops}),
        st.lists(inner, max_size=2).map(lambda ops: {"not": ops}),
        st.tuples(inner, inner).map(lambda pair: {**pair[0], **pair[1]}),
    ),
    max_leaves=4,
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.sampled_from(["slots", "nodes", "exclusive", "slot-exclusive", "range"]))
    cores_per_slot = draw(st.integers(1, 3))
    gpus_per_slot = draw(st.sampled_from([0, 0, 1]))
    constraint = draw(st.none() | constraints)
    if shape == "slots":
        js = jobspec_from_shorthand(
            slots=draw(st.integers(1, 6)),
            cores_per_slot=cores_per_slot,
            gpus_per_slot=gpus_per_slot,
        )
    elif shape == "nodes":
        js = jobspec_from_shorthand(
            nodes=draw(st.integers(1, 3)),
            slots=draw(st.integers(1, 2)),
            cores_per_slot=cores_per_slot,
            gpus_per_slot=gpus_per_slot,
        )
    elif shape == "exclusive":
        js = jobspec_from_shorthand(
            nodes=draw(st.integers(1, 3)), exclusive=True, cores_per_slot=cores_per_slot
        )
    elif shape == "slot-exclusive":
        js = jobspec_from_shorthand(slots=draw(st.integers(1, 2)), exclusive=True)
    else:
        js = jobspec_from_shorthand(nodes=1, exclusive=draw(st.booleans()))
        js["resources"][0]["count"] = draw(st.sampled_from(["1+", "2+", "1-2", "2-3"]))
    if constraint is not None:
        js["attributes"]["system"]["constraints"] = constraint
    return js


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    nranks = draw(st.integers(1, 6))
    ranks = sorted(draw(st.sets(st.integers(0, 7), min_size=nranks, max_size=nranks)))
    lite = []
    for r in ranks:
        ncores = draw(st.integers(1, 6))
        children = {"core": f"0-{ncores - 1}" if ncores > 1 else "0"}
        ngpus = draw(st.integers(0, 2))
        if ngpus:
            children["gpu"] = f"0-{ngpus - 1}" if ngpus > 1 else "0"
        lite.append({"rank": str(r), "children": children})
    props = {}
    for name in PROPERTIES:
        members = draw(st.sets(st.sampled_from(ranks)))
        if members:
            props[name] = ",".join(map(str, sorted(members)))
    execution: dict[str, Any] = {"R_lite": lite, "nodelist": [",".join(f"n{r}" for r in ranks)]}
    if props:
        execution["properties"] = props
    return {"version": 1, "execution": execution}


# -- the state machine -------------------------------------------------------------------


class PoolMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.next_job = 0
        self.last_generation = 0

    @initialize(R=topologies())
    def build(self, R: dict[str, Any]) -> None:
        self.pool = ResourcePool(R)
        ranks = sorted(IDset(e["rank"]).first() for e in R["execution"]["R_lite"])
        entries = {IDset(e["rank"]).first(): e["children"] for e in R["execution"]["R_lite"]}
        self.model = Model(
            cores={r: set(IDset(entries[r]["core"])) for r in ranks},
            gpus={r: set(IDset(entries[r].get("gpu", ""))) for r in ranks},
            hosts={r: f"n{r}" for r in ranks},
            props={name: set(IDset(v)) for name, v in R["execution"].get("properties", {}).items()},
            up=set(ranks),
            alloc_cores={r: set() for r in ranks},
            alloc_gpus={r: set() for r in ranks},
        )

    @rule(target=jobs, js=requests())
    def alloc(self, js: dict[str, Any]) -> int:
        jobid = self.next_job
        self.next_job += 1
        req = parse_jobspec(js)
        expected = None if req.is_discrete else self.model.select(req)
        generation = self.pool.generation
        try:
            granted = self.pool.alloc(jobid, req)
        except InfeasibleRequest:
            assert expected is None and not self.model.feasible(req)
            assert self.pool.generation == generation
            return -1
        except InsufficientResources:
            assert expected is None and self.model.feasible(req)
            assert self.pool.generation == generation
            return -1
        got = pool_grant(granted)
        assert got == expected, (js, got, expected)
        for r in got:
            name = self.model.hosts[r]
            assert name in granted.nodelist
        assert not any(
            p.startswith("+") for p in granted.to_dict()["execution"].get("properties", {})
        )
        self.model.take(got)
        self.model.jobs[jobid] = got
        return jobid

    @rule(jobid=consumes(jobs))
    def free(self, jobid: int) -> None:
        before = self.pool.copy_allocated().to_dict()
        self.pool.free(jobid)
        grant = self.model.jobs.pop(jobid, None)
        if grant is None:
            assert self.pool.copy_allocated().to_dict() == before
            return
        self.model.give_back(grant)

    @rule(jobid=jobs, data=st.data())
    def free_part(self, jobid: int, data: st.DataObject) -> None:
        grant = self.model.jobs.get(jobid)
        if not grant:
            return
        rank = data.draw(st.sampled_from(sorted(grant)))
        part = {rank: grant[rank]}
        self.pool.free(jobid, grant_R(part))
        self.model.give_back(part)
        del grant[rank]

    @rule(jobid=consumes(jobs))
    def free_final(self, jobid: int) -> None:
        grant = self.model.jobs.pop(jobid, None)
        if grant is None:
            return
        self.pool.free(jobid, grant_R(grant), final=True)
        self.model.give_back(grant)

    @rule(ranks=rank_sets)
    def mark_down(self, ranks: str) -> None:
        self.pool.mark_down(ranks)
        self.model.up -= set(IDset(ranks))

    @rule(ranks=st.just("all") | rank_sets)
    def mark_up(self, ranks: str) -> None:
        self.pool.mark_up(ranks)
        self.model.up |= (
            set(self.model.cores) if ranks == "all" else set(IDset(ranks)) & set(self.model.cores)
        )

    @precondition(lambda self: len(self.model.cores) > 1)
    @rule(data=st.data())
    def remove_ranks(self, data: st.DataObject) -> None:
        rank = data.draw(st.sampled_from(sorted(self.model.cores)))
        self.pool.remove_ranks(rank)
        for table in (
            self.model.cores,
            self.model.gpus,
            self.model.alloc_cores,
            self.model.alloc_gpus,
            self.model.hosts,
        ):
            del table[rank]
        self.model.up.discard(rank)
        for members in self.model.props.values():
            members.discard(rank)
        for grant in self.model.jobs.values():
            grant.pop(rank, None)

    @rule(target=jobs, data=st.data())
    def register_alloc(self, data: st.DataObject) -> int:
        """Register random IDs: accepted iff they overlap nothing already allocated."""
        rank = data.draw(st.sampled_from(sorted(self.model.cores)))
        cores = data.draw(st.sets(st.sampled_from(sorted(self.model.cores[rank])), min_size=1))
        grant = {rank: (cores, set())}
        jobid = self.next_job
        self.next_job += 1
        overlap = cores & self.model.alloc_cores[rank]
        generation = self.pool.generation
        try:
            self.pool.register_alloc(jobid, grant_R(grant))
        except ValueError as err:
            assert overlap, err
            assert self.pool.generation == generation
            return -1
        assert not overlap
        self.model.take(grant)
        self.model.jobs[jobid] = grant
        return jobid

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "pool"):
            return
        allocated = self.pool.copy_allocated()
        expected = {
            r: (self.model.alloc_cores[r], self.model.alloc_gpus[r])
            for r in self.model.cores
            if self.model.alloc_cores[r] or self.model.alloc_gpus[r]
        }
        assert {
            r: (set(allocated.cores(r)), set(allocated.gpus(r))) for r in allocated.ranks
        } == expected
        # nothing is granted twice: the jobs' grants are pairwise disjoint
        seen: set[tuple[int, str, int]] = set()
        for grant in self.model.jobs.values():
            for r, (c, g) in grant.items():
                for kind, ids in (("core", c), ("gpu", g)):
                    for i in ids:
                        assert (r, kind, i) not in seen
                        seen.add((r, kind, i))
        assert set(self.pool.copy_down().ranks) == set(self.model.cores) - self.model.up
        assert set(self.pool.ranks) == set(self.model.cores)

    @invariant()
    def round_trips_and_generation_grows(self) -> None:
        if not hasattr(self, "pool"):
            return
        R = self.pool.to_dict()
        assert ResourcePool(R).to_dict() == R
        assert self.pool.generation >= self.last_generation
        self.last_generation = self.pool.generation

    @invariant()
    def copy_equals_original(self) -> None:
        if not hasattr(self, "pool"):
            return
        clone = self.pool.copy()
        assert clone.copy_allocated().to_dict() == self.pool.copy_allocated().to_dict()
        assert clone.generation == self.pool.generation


PoolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPoolMachine = PoolMachine.TestCase


def test_free_restores_exactly() -> None:
    """A deterministic long run: allocate until full, free in random order, compare."""
    import random

    rng = random.Random(3)
    R = {
        "version": 1,
        "execution": {"R_lite": [{"rank": "0-15", "children": {"core": "0-7", "gpu": "0-1"}}]},
    }
    pool = ResourcePool(R)
    empty = pool.copy_allocated().to_dict()
    jobs = []
    for jobid in range(200):
        js = rng.choice(
            [
                jobspec_from_shorthand(slots=rng.randint(1, 5)),
                jobspec_from_shorthand(nodes=rng.randint(1, 2), exclusive=True),
                jobspec_from_shorthand(slots=1, cores_per_slot=2, gpus_per_slot=1),
            ]
        )
        try:
            pool.alloc(jobid, js)
            jobs.append(jobid)
        except InsufficientResources:
            continue
        if rng.random() < 0.3 and jobs:
            pool.free(jobs.pop(rng.randrange(len(jobs))))
    snapshots = []
    rng.shuffle(jobs)
    for jobid in jobs:
        snapshots.append(pool.copy_allocated().to_dict())
        pool.free(jobid)
    assert pool.copy_allocated().to_dict() == empty
    assert len({str(s) for s in snapshots}) == len(snapshots)  # each free released something


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 5000)))
def test_bit_helpers(positions: set[int]) -> None:
    mask = mask_from_indices(positions, 5001)
    assert mask == sum(1 << p for p in positions)
    assert list(iter_bits(mask)) == sorted(positions)
    assert list(IDset.from_mask(mask)) == sorted(positions)


def test_large_pool_matches_model() -> None:
    """Batch paths (grants over many ranks, chunked bit iteration) against the model."""
    import random

    rng = random.Random(5)
    lite = []
    for rank in range(1500):
        children = {"core": f"0-{rng.choice([3, 7, 15])}"}
        if rng.random() < 0.3:
            children["gpu"] = "0-1"
        lite.append({"rank": str(rank), "children": children})
    R = {
        "version": 1,
        "execution": {
            "R_lite": lite,
            "nodelist": ["n[0-1499]"],
            "properties": {"red": "0-700", "big": "650-1499"},
        },
    }
    pool = ResourcePool(R)
    model = Model(
        cores={r: set(IDset(e["children"]["core"])) for r, e in enumerate(lite)},
        gpus={r: set(IDset(e["children"].get("gpu", ""))) for r, e in enumerate(lite)},
        hosts={r: f"n{r}" for r in range(1500)},
        props={"red": set(range(701)), "big": set(range(650, 1500))},
        up=set(range(1500)),
        alloc_cores={r: set() for r in range(1500)},
        alloc_gpus={r: set() for r in range(1500)},
    )
    pool.mark_down("100-199")
    model.up -= set(range(100, 200))
    live: list[int] = []
    for jobid in range(120):
        if live and rng.random() < 0.35:
            victim = live.pop(rng.randrange(len(live)))
            pool.free(victim)
            model.give_back(model.jobs.pop(victim))
            continue
        js = rng.choice(
            [
                jobspec_from_shorthand(nodes=rng.randint(20, 120), exclusive=True),
                jobspec_from_shorthand(
                    slots=rng.randint(50, 900), cores_per_slot=rng.randint(1, 3)
                ),
                jobspec_from_shorthand(
                    nodes=rng.randint(30, 200), slots=2, gpus_per_slot=rng.choice([0, 1])
                ),
                jobspec_from_shorthand(slots=1),
            ]
        )
        if rng.random() < 0.3:
            js["attributes"]["system"]["constraints"] = rng.choice(
                [
                    {"properties": ["red"]},
                    {"not": [{"properties": ["big"]}]},
                    {"ranks": ["300-1200"]},
                ]
            )
        if rng.random() < 0.2:
            js["resources"][0]["count"] = rng.choice(["10+", "5-400"])
        req = parse_jobspec(js)
        expected = model.select(req)
        try:
            granted = pool.alloc(jobid, req)
        except (InsufficientResources, InfeasibleRequest) as err:
            assert expected is None, err
            continue
        got = pool_grant(granted)
        assert got == expected
        model.take(got)
        model.jobs[jobid] = got
        live.append(jobid)
    allocated = pool.copy_allocated()
    assert {r: (set(allocated.cores(r)), set(allocated.gpus(r))) for r in allocated.ranks} == {
        r: (model.alloc_cores[r], model.alloc_gpus[r])
        for r in model.cores
        if model.alloc_cores[r] or model.alloc_gpus[r]
    }
    for jobid in live:
        pool.free(jobid)
    assert pool.copy_allocated().dumps() == ""

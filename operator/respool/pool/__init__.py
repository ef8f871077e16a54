"""respool.pool — the allocation engine: R v1, idsets, hostlists, jobspecs, RFC 31
constraints, a Flux-compatible ``ResourcePool`` and the time ``Planner``.

Standard library only (a test enforces it). See docs/engine.md.
"""

from .hostlist import Hostlist, hostlist_size
from .idset import IDset
from .jobspec import ResourceCount, ResourceRequest, jobspec_from_shorthand, parse_jobspec
from .planner import Block, Booking, Planner, Preemption, queue_key
from .resource_pool import InfeasibleRequest, InsufficientResources, ResourcePool
from .rv1 import ResourceSet

__all__ = [
    "Block",
    "Booking",
    "Hostlist",
    "IDset",
    "InfeasibleRequest",
    "InsufficientResources",
    "Planner",
    "Preemption",
    "ResourceCount",
    "ResourcePool",
    "ResourceRequest",
    "ResourceSet",
    "hostlist_size",
    "jobspec_from_shorthand",
    "parse_jobspec",
    "queue_key",
]

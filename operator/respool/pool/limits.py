"""Hard limits on the size of anything the engine parses.

The engine represents per-rank core and GPU sets as integer bitmasks and expands rank
lists into per-rank tables, so an input such as ``rank: "0-4294967295"`` or
``core: "0-999999"`` would otherwise allocate gigabytes before failing. Every parser
checks these limits on the *compressed* form (interval bounds, counts) before it
expands anything, and raises ``ValueError`` naming the limit.
"""

from __future__ import annotations

#: Largest ID an idset may hold (RFC 22 IDs are unsigned 32-bit; UINT32_MAX is Flux's
#: "invalid ID" marker, so the largest valid one is one less).
MAX_ID = 2**32 - 2

#: Most ranks a resource set (a pool, a grant) may describe.
MAX_RANKS = 262_144

#: Largest core ID on a rank (so at most 4096 cores per rank).
MAX_CORE_ID = 4095

#: Largest GPU ID on a rank (so at most 1024 GPUs per rank).
MAX_GPU_ID = 1023

#: Most names a hostlist may expand to.
MAX_HOSTS = MAX_RANKS

#: Longest hostname accepted.
MAX_HOSTNAME_LENGTH = 255

#: Deepest nesting of jobspec resource vertices and of constraint operators.
MAX_DEPTH = 100

#: Most properties a resource set may define.
MAX_PROPERTIES = 4096

"""Adding and removing our finalizer with JSON patches that never clobber other finalizers."""

from __future__ import annotations

import logging
from typing import Any

from respool.controller.kubeapi import ApiError
from respool.controller.lifecycle import FINALIZER
from respool.controller.ports import Api

logger = logging.getLogger(__name__)

__all__ = ["FINALIZER", "add_finalizer", "remove_finalizer"]


async def add_finalizer(api: Api, path: str, uid: str, metadata: dict[str, Any]) -> bool:
    """Add our finalizer; True if it is on the object afterwards, False if the object is gone.

    `metadata` is the freshest metadata known (e.g. from the answer to the status write): the
    patch is conditional on its resourceVersion, so other finalizers are never clobbered."""
    finalizers = list(metadata.get("finalizers") or [])
    if FINALIZER in finalizers:
        return True
    ops = [{"op": "test", "path": "/metadata/uid", "value": uid},
           {"op": "test", "path": "/metadata/resourceVersion",
            "value": metadata.get("resourceVersion")},
           {"op": "add", "path": "/metadata/finalizers", "value": [*finalizers, FINALIZER]}]
    try:
        await api.json_patch(path, ops)
        return True
    except ApiError as exc:
        if exc.not_found:
            return False
        if not exc.conflict:
            raise
    # Changed in between: read what is really there and retry.
    return await _retry_with_fresh_list(api, path, uid, add=True)


async def remove_finalizer(api: Api, path: str, uid: str, known: list[str] | None) -> bool:
    """Remove our finalizer; True if it is gone (or the object is), never removes others'."""
    if known and FINALIZER in known:
        index = known.index(FINALIZER)
        ops = [{"op": "test", "path": "/metadata/uid", "value": uid},
               {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
               {"op": "remove", "path": f"/metadata/finalizers/{index}"}]
        try:
            await api.json_patch(path, ops)
            return True
        except ApiError as exc:
            if exc.not_found:
                return True
            if not exc.conflict:
                raise
    return await _retry_with_fresh_list(api, path, uid, add=False)


async def _retry_with_fresh_list(api: Api, path: str, uid: str, add: bool) -> bool:
    for _attempt in range(3):
        try:
            current = await api.get(path)
        except ApiError as exc:
            if exc.not_found:
                return not add
            raise
        metadata = current.get("metadata") or {}
        if metadata.get("uid") != uid:
            return not add  # deleted and re-created: not ours any more
        finalizers = list(metadata.get("finalizers") or [])
        if add == (FINALIZER in finalizers):
            return True
        new = [*finalizers, FINALIZER] if add else [f for f in finalizers if f != FINALIZER]
        ops = [{"op": "test", "path": "/metadata/resourceVersion",
                "value": metadata.get("resourceVersion")},
               {"op": "add", "path": "/metadata/finalizers", "value": new}]
        try:
            await api.json_patch(path, ops)
            return True
        except ApiError as exc:
            if exc.not_found:
                return not add
            if not exc.conflict:
                raise
    logger.warning("could not %s finalizer on %s after retries",
                   "add" if add else "remove", path)
    return False

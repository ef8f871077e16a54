"""Holder liveness: a reservation made from inside a Pod is owned by that Pod (or its Job).

When the Python client or the CLI creates a reservation while running in a Pod of the same
namespace, the reservation gets an ownerReference to the Job that owns the Pod (when a Job
does) or else to the Pod itself. Kubernetes' garbage collector then deletes the reservation
when its holder is deleted - a cancelled CI job, a deleted Pod - and the operator releases
what it held: no orphan hold lasts until its endTime.

The Pod is found from the downward API variables ``POD_NAME`` and ``POD_NAMESPACE`` (set them
in the Pod spec with ``fieldRef: metadata.name`` / ``metadata.namespace``) or, in any Pod,
from ``HOSTNAME`` and the service account's namespace file. Reading it needs ``get`` on
``pods`` in that namespace; without it (or outside a Pod, or for a reservation in another
namespace: owner references never cross namespaces) nothing is set and the reservation is
created as before.

Opt out: ``RESPOOL_OWNER_REFERENCE=none`` in the environment (the client and the CLI alike),
or ``KubeAPI(owner_reference=False)``; a body that already has ownerReferences is left as is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "RESPOOL_OWNER_REFERENCE"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def running_pod(environ: Mapping[str, str] | None = None,
                namespace_file: str = SERVICE_ACCOUNT_NAMESPACE) -> tuple[str, str] | None:
    """(namespace, name) of the Pod this process runs in, or None (not in a Pod, opted out)."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_ENV, "").strip().lower() in ("none", "off", "false", "0", "no"):
        return None
    name, namespace = env.get("POD_NAME", "").strip(), env.get("POD_NAMESPACE", "").strip()
    if name and namespace:
        return namespace, name
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    name = name or env.get("HOSTNAME", "").strip()
    if not namespace:
        try:
            with open(namespace_file, encoding="utf-8") as handle:
                namespace = handle.read().strip()
        except OSError:
            return None
    return (namespace, name) if name and namespace else None


def owner_of(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference for a reservation held by ``pod``: its Job if a Job controls it,
    else the Pod."""
    metadata = pod.get("metadata") or {}
    for reference in metadata.get("ownerReferences") or []:
        if reference.get("controller") and reference.get("kind") == "Job" \
                and str(reference.get("apiVersion", "")).startswith("batch/"):
            return {"apiVersion": reference["apiVersion"], "kind": "Job",
                    "name": reference["name"], "uid": reference["uid"]}
    return {"apiVersion": "v1", "kind": "Pod", "name": metadata.get("name"),
            "uid": metadata.get("uid")}


def with_owner(body: Mapping[str, Any], namespace: str,
               read_pod: Callable[[str, str], Mapping[str, Any]],
               environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``body`` with the ownerReference of the Pod this process runs in, when there is one to
    set (see the module docstring); any failure to find it leaves the body as it is."""
    result = dict(body)
    metadata = dict(result.get("metadata") or {})
    if metadata.get("ownerReferences"):
        return result
    pod = running_pod(environ)
    if pod is None or pod[0] != namespace:
        return result
    try:
        owner = owner_of(read_pod(pod[0], pod[1]))
    except Exception as exc:  # no permission, no such Pod: the hold is just not tied to it
        logger.debug("not setting an owner reference to Pod %s/%s: %s", pod[0], pod[1], exc)
        return result
    if not owner.get("uid") or not owner.get("name"):
        return result
    metadata["ownerReferences"] = [owner]
    result["metadata"] = metadata
    return result

"""The mutating admission webhook, served by the operator through kopf (`respool run
--webhook-port`).

kopf serves it (`kopf.WebhookServer`, HTTPS with the certificate of
`respool.controller.webhook_certs`) and manages the ``MutatingWebhookConfiguration`` named
``respool.io``: one webhook for Pod CREATE, with the ``objectSelector`` ``respool.io/reservation
Exists`` (a Pod without the label never reaches the operator) and the current CA bundle
(kopf rewrites ``caBundle`` whenever the certificate files change).

``failurePolicy: Fail``, decided: a Pod that names a reservation asked to run on reserved Nodes
only, and perhaps not before the window opens; admitting it unchanged while the operator is
away would let it run anywhere at once. So while the operator is down (or not yet serving),
creating such a Pod is refused with the API server's "failed calling webhook" error, and
whatever creates it (a Job, a Deployment, a CI system) retries; Pods without the label are not
affected at all. The webhook stays registered when the operator stops (``persistent``) so that
this holds across restarts; `respool run` without ``--webhook-port`` never registers it (delete
the ``respool.io`` MutatingWebhookConfiguration to stop enforcing it altogether).

What the webhook decides is in `respool.controller.admission` (pure); reservations are looked up
in the operator's own index (fed by its reservation watch), and read from the API server only
when the index has not heard of the one named yet (a reservation and its Pods are often
created together).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf

from respool.controller import metrics
from respool.controller.admission import (
    RESERVATION_LABEL,
    ReservationFacts,
    ReservationIndex,
    mutated_spec,
    refusal,
)
from respool.controller.kubeapi import ApiError, KubeApi, reservation_path
from respool.controller.webhook_certs import ensure_certificates

logger = logging.getLogger(__name__)

CONFIGURATION_NAME = "respool.io"
HANDLER_ID = "pods"


@dataclass
class WebhookOptions:
    """Set by `respool run`; ``port`` None: no webhook."""

    port: int | None = None
    address: str = "127.0.0.1"
    host: str | None = None  # the name the API server uses in the URL (default: address)
    cert_dir: Path | None = None
    extra_names: list[str] = field(default_factory=list)


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, announced to the API server as a Service (in a cluster) rather than a
    URL: ``--webhook-service NAMESPACE/NAME`` (port 443 of the Service)."""

    def __init__(self, *, service_namespace: str, service_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace = service_namespace
        self.service_name = service_name

    async def __call__(self, fn: Any) -> Any:
        async for client_config in super().__call__(fn):
            config = dict(client_config)
            config.pop("url", None)
            config["service"] = {"namespace": self.service_namespace,
                                 "name": self.service_name, "port": 443}
            yield config


def configure(settings: kopf.OperatorSettings, options: WebhookOptions,
              service: tuple[str, str] | None = None) -> None:
    """Point kopf at the webhook server and let it manage the configuration."""
    import tempfile

    assert options.port is not None
    host = options.host or options.address
    names = [host, options.address, *options.extra_names]
    if service is not None:
        names += [f"{service[1]}.{service[0]}.svc", f"{service[1]}.{service[0]}.svc.cluster.local"]
    directory = options.cert_dir or Path(tempfile.mkdtemp(prefix="respool-webhook-"))
    files = ensure_certificates(directory, [n for n in names if n and n != "0.0.0.0"])
    logger.info("admission webhook on %s:%d (%s certificate in %s)", options.address,
                options.port, "generated" if files.generated else "provided", directory)
    arguments: dict[str, Any] = dict(addr=options.address, port=options.port, host=host,
                                     certfile=files.certfile, pkeyfile=files.keyfile,
                                     cafile=files.cafile)
    if service is not None:
        settings.admission.server = ServiceWebhookServer(
            service_namespace=service[0], service_name=service[1], **arguments)
    else:
        settings.admission.server = kopf.WebhookServer(**arguments)
    settings.admission.managed = CONFIGURATION_NAME


def register(index: Callable[[], tuple[ReservationIndex, KubeApi]]) -> None:
    """Register the Pod handler with kopf (before kopf starts). ``index()`` gives the
    controller's reservation index and API client at admission time."""

    @kopf.on.mutate("", "v1", "pods", id=HANDLER_ID, operations=["CREATE"],
                    labels={RESERVATION_LABEL: kopf.PRESENT}, persistent=True,
                    side_effects=False)
    async def mutate_pod(body: kopf.Body, patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
        began = time.perf_counter()
        outcome = "mutated"
        try:
            reservations, api = index()
            metadata = body.get("metadata") or {}
            namespace = str(metadata.get("namespace") or "")
            name = str((metadata.get("labels") or {}).get(RESERVATION_LABEL) or "")
            facts = reservations.get(namespace, name)
            if facts is None and name:
                facts = await _read(api, reservations, namespace, name)
            message = refusal(namespace, name, facts,
                              [ns for ns in reservations.namespaces_of(name) if ns != namespace])
            if message is not None:
                outcome = "refused"
                raise kopf.AdmissionError(message, code=403)
            assert facts is not None
            spec = mutated_spec(body.get("spec") or {}, facts)
            patch.fns.append(lambda raw: raw.__setitem__("spec", spec))
        finally:
            metrics.WEBHOOK_SECONDS.labels(outcome).observe(time.perf_counter() - began)


async def _read(api: KubeApi, reservations: ReservationIndex, namespace: str,
                name: str) -> ReservationFacts | None:
    try:
        raw = await api.get(reservation_path(namespace, name))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise kopf.AdmissionError(
            f"cannot read ResourceReservation {name!r} in namespace {namespace!r} now "
            f"({exc}); try again", code=503) from exc
    facts = ReservationFacts.from_object(raw)
    reservations.put(facts)
    return facts

"""The kopf registrations: thin, level-based triggers into `respool.controller.Controller`.

kopf watches pools, Nodes and Namespaces; reservations - the high-volume kind - are listed and
watched by the controller itself (see `Controller._watch_reservations`), which costs a fraction
of kopf's per-event processing. Only `@kopf.on.event` handlers are used. They write nothing (no progress or
diff-base annotations, no return values, no kopf finalizers); the pool actors write status
through the status subresource and manage the `respool.io/finalizer` finalizer. kopf's
persistence identity is nevertheless pinned under `respool.io` once, so that a future handler
that needs it never writes under kopf's default names.

A tiny index of pool names makes kopf hold every handler until its first listing is
complete; the first handler call then drops pools deleted between the controller's own
start-up listing and kopf's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from respool.controller import metrics
from respool.controller.controller import Controller
from respool.controller.kubeapi import GROUP, POOLS, VERSION, KubeApi
from respool.controller.seal_key import SealKeyError, load_booking_seal
from respool.controller.webhook import WebhookOptions

logger = logging.getLogger(__name__)

KOPF_FINALIZER = "respool.io/kopf"  # never set by these handlers; see startup()


@dataclass
class RunOptions:
    """Set by `respool run` before kopf starts."""

    namespaces: list[str] = field(default_factory=list)
    pool_status_interval: float = 1.0
    #: The admission webhook (port None: off) and, in a cluster, its Service (namespace, name).
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    webhook_service: tuple[str, str] | None = None
    #: The operator's own namespace, where the key of status.bookingSeal is kept (a Lease,
    #: respool.controller.seal_key); None: $POD_NAMESPACE, else the kubeconfig's, else default.
    seal_namespace: str | None = None


OPTIONS = RunOptions()
_controller: Controller | None = None
_lag_sampler: list[asyncio.Task[None]] = []


def controller() -> Controller:
    if _controller is None:
        raise RuntimeError("the respool controller has not started")
    return _controller


def in_cluster_address(info: kopf.ConnectionInfo, environ: Mapping[str, str]) -> kopf.ConnectionInfo:
    """The API server at KUBERNETES_SERVICE_HOST:PORT, as client-go's in-cluster config has it.

    kopf's service-account login names https://kubernetes.default.svc, which only cluster DNS
    resolves: a Pod with hostNetwork (dnsPolicy Default), a cluster without CoreDNS or one
    whose DNS is down could not reach its API server. The kubelet sets both variables in every
    Pod; the certificate is still checked against the service-account CA.
    """
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port.isdigit():
        return info
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def connection_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In a Pod: its service account; elsewhere: the kubeconfig ($KUBECONFIG or ~/.kube)."""
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        info = in_cluster_address(info, os.environ)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: run in a Pod with a service account, or set KUBECONFIG")
    return info


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    return connection_info(settings)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    # Persistence identity, fixed once (never change these on a live operator). kopf's own
    # finalizer must differ from ours: kopf strips its finalizer from objects for which no
    # handler needs one - all of ours, since we only watch events - so it would take ours too.
    settings.persistence.finalizer = KOPF_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # kopf would post an Event per handler run; our actors post one per decision instead.
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    webhook_on = OPTIONS.webhook.port is not None
    if webhook_on:
        from respool.controller import webhook

        webhook.configure(settings, OPTIONS.webhook, OPTIONS.webhook_service)
    info = connection_info(settings)
    api = KubeApi(info, relogin=lambda: connection_info(settings))
    seal_namespace = (OPTIONS.seal_namespace or os.environ.get("POD_NAMESPACE")
                      or info.default_namespace or "default")
    try:
        seal = await load_booking_seal(api, seal_namespace)
    except SealKeyError as exc:
        await api.close()
        raise kopf.PermanentError(str(exc)) from exc
    ctl = Controller(api, namespaces=OPTIONS.namespaces,
                     pool_status_interval=OPTIONS.pool_status_interval, pod_gates=webhook_on,
                     seal=seal)
    try:
        await ctl.start()
    except RuntimeError as exc:
        await ctl.stop()
        raise kopf.PermanentError(str(exc)) from exc
    _controller = ctl
    # What exists now (modules, kopf, the pydantic schemas, the state just listed) lives as long
    # as the process: out of the cyclic collector's way, so that a full collection later walks
    # only what came since (with 100 hostile reservations present, full collections held the
    # event loop 0.8-0.9 s; docs/operator.md "Hostile tenants").
    gc.freeze()
    logger.info("%d objects kept out of garbage collection", gc.get_freeze_count())
    # The event loop's lag (respool_event_loop_lag_seconds): one slow piece of work delays
    # every pool, the watches and the Lease, so it is measured, not guessed.
    _lag_sampler.append(asyncio.create_task(metrics.sample_loop_lag(), name="respool-loop-lag"))


def register_webhook() -> None:
    """With `respool run --webhook-port`: the Pod admission handler (before kopf starts)."""
    from respool.controller import webhook

    webhook.register(lambda: (controller().reservations, controller().api))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global _controller
    for task in _lag_sampler:
        task.cancel()
    _lag_sampler.clear()
    if _controller is not None:
        await _controller.stop()
        _controller = None


@kopf.index(GROUP, VERSION, POOLS)
def pool_names(name: str, **_: Any) -> dict[str, bool]:
    return {name: True}


def _prune(pool_names: kopf.Index[str, bool]) -> None:
    ctl = controller()
    if not ctl.pruned:
        ctl.prune(list(pool_names.keys()))


@kopf.on.event(GROUP, VERSION, POOLS)
async def pool_event(event: kopf.RawEvent, **kwargs: Any) -> None:
    _prune(kwargs["pool_names"])
    controller().on_pool(event.get("type"), dict(event.get("object") or {}))


@kopf.on.event("", "v1", "nodes")
async def node_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().on_node(event.get("type"), dict(event.get("object") or {}))


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(event: kopf.RawEvent, **kwargs: Any) -> None:
    _prune(kwargs["pool_names"])
    controller().on_namespace(event.get("type"), dict(event.get("object") or {}))


@kopf.on.event("scheduling.k8s.io", "v1", "priorityclasses")
async def priority_class_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().on_priority_class(event.get("type"), dict(event.get("object") or {}))


@kopf.on.probe(id="pools")
def probe_pools(**_: Any) -> int:
    return len(controller().actors) if _controller is not None else 0


__all__ = ["OPTIONS", "KubeApi", "RunOptions", "controller"]

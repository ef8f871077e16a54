"""The operator's API client tells a definite refusal from an outage, on the real API server.

An outage (unreachable, 5xx) leaves a write's outcome unknown, so the actor holds the booking
and repeats the write until it gets an answer. A write etcd can never store comes back as a
500 too ("etcdserver: request is too large"), but it is definite: treating it as an outage
would hold the booking and repeat the write forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest


def _login(control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import kopf

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return info


@pytest.mark.parametrize(("mebibytes", "wording"), [
    (1.6, "etcdserver: request is too large"),
    (2.5, "code = ResourceExhausted"),
], ids=["etcd-limit", "grpc-limit"])
def test_a_write_too_large_for_etcd_is_a_definite_refusal(
        mebibytes: float, wording: str, rk: Any, namespace: str, crds: list[str], control_plane: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.kubeapi import ApiError, KubeApi, reservation_path

    # No pool: the operator (if one runs) leaves it Pending/PoolNotFound and writes small statuses.
    rk.create(namespace, "huge", {"pool": "no-such-pool-for-refusals", "duration": "1h"})
    info = _login(control_plane, monkeypatch)
    # Over etcd's request limit (1.5 MiB), then over the gRPC message limit (2 MiB); both under
    # the API server's body limit (3 MiB), so it is etcd's side that refuses them.
    padding = "x" * int(mebibytes * 1024 * 1024)

    async def write() -> ApiError:
        api = KubeApi(info)
        try:
            with pytest.raises(ApiError) as refused:
                await api.json_patch(
                    reservation_path(namespace, "huge", status=True),
                    [{"op": "add", "path": "/status", "value": {"config": {"blob": padding}}}],
                )
            return refused.value
        finally:
            await api.close()

    error = asyncio.run(write())
    assert error.status == 500 and wording in error.message, error
    assert error.too_large, error
    assert not error.unavailable, "a refusal etcd will repeat forever is not an outage"
    assert not error.conflict
    assert "blob" not in (rk.get(namespace, "huge").get("status") or {}).get("config", {})


def test_an_unreachable_server_is_an_unknown_outcome(
        control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from respool.controller.kubeapi import ApiError, KubeApi

    info = _login(control_plane, monkeypatch)
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    info = dataclasses.replace(info, server=f"https://127.0.0.1:{dead}")

    async def read() -> ApiError:
        api = KubeApi(info, retries=1)
        try:
            with pytest.raises(ApiError) as failed:
                await api.get("/version")
            return failed.value
        finally:
            await api.close()

    error = asyncio.run(read())
    assert error.unavailable and not error.too_large and error.status == 0, error

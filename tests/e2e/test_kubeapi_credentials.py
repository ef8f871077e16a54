"""The operator's API client logs in again after a 401, on the real API server.

In a Pod the kubelet rotates the service-account token file in place; a kubeconfig may be
refreshed by a credential helper. A request answered 401 (authentication comes before
anything is applied, so it is safe to resend) reads the credentials again, once, and is sent
again with them; a watch answered 401 does the same for its reconnect.
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
    assert info is not None and info.token, "the test control plane authenticates by token"
    return info


def test_a_401_logs_in_again_once_and_resends(
        control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.kubeapi import KubeApi

    fresh = _login(control_plane, monkeypatch)
    stale = dataclasses.replace(fresh, token="rotated-away")
    logins: list[int] = []

    def relogin() -> Any:
        logins.append(1)
        return fresh

    async def scenario() -> dict[str, Any]:
        api = KubeApi(stale, relogin=relogin)
        try:
            first = await api.get("/api/v1/namespaces/default")
            # Logged in for good: the next request needs no new login.
            await api.get("/api/v1/namespaces/kube-system")
            return first
        finally:
            await api.close()

    answer = asyncio.run(scenario())
    assert answer["metadata"]["name"] == "default"
    assert len(logins) == 1


@pytest.mark.parametrize("relogin_gives", ["nothing", "the same credentials"])
def test_a_401_that_a_new_login_cannot_fix_is_an_error(
        relogin_gives: str, control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.kubeapi import ApiError, KubeApi

    stale = dataclasses.replace(_login(control_plane, monkeypatch), token="rotated-away")
    relogin = None if relogin_gives == "nothing" else (lambda: stale)

    async def scenario() -> ApiError:
        api = KubeApi(stale, relogin=relogin)
        try:
            with pytest.raises(ApiError) as refused:
                await api.get("/api/v1/namespaces/default")
            return refused.value
        finally:
            await api.close()

    error = asyncio.run(scenario())
    assert error.status == 401 and not error.unavailable, error


def test_a_watch_answered_401_reconnects_with_fresh_credentials(
        control_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.controller.kubeapi import ApiError, KubeApi, watch_events

    fresh = _login(control_plane, monkeypatch)
    stale = dataclasses.replace(fresh, token="rotated-away")

    async def scenario() -> dict[str, Any]:
        api = KubeApi(stale, relogin=lambda: fresh)
        try:
            with pytest.raises(ApiError) as refused:
                async for _event in watch_events(api, "/api/v1/namespaces", "0",
                                                 timeout_seconds=5):
                    pass
            assert refused.value.status == 401
            # The caller's reconnect (what the controller's watch loop does) now works.
            async for event in watch_events(api, "/api/v1/namespaces", "0", timeout_seconds=5):
                return dict(event)
            raise AssertionError("the watch ended without an event")
        finally:
            await api.close()

    event = asyncio.run(scenario())
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Namespace"

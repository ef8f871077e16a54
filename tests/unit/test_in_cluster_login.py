"""In a Pod the API server is KUBERNETES_SERVICE_HOST:PORT (as client-go has it), not a DNS name.

kopf's service-account login names https://kubernetes.default.svc, which only cluster DNS
resolves; the image run as a kubelet would run it (tests/e2e/test_image_run.py) had no such DNS
and never reached its API server until this.
"""

from __future__ import annotations

import kopf

from respool.controller.handlers import in_cluster_address

INFO = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t",
                           ca_path="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                           default_namespace="ns")


def test_the_service_address_replaces_the_dns_name() -> None:
    info = in_cluster_address(INFO, {"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                     "KUBERNETES_SERVICE_PORT": "443"})
    assert info.server == "https://10.96.0.1:443"
    assert (info.token, info.ca_path, info.default_namespace) == ("t", INFO.ca_path, "ns")


def test_an_ipv6_service_address_is_bracketed() -> None:
    info = in_cluster_address(INFO, {"KUBERNETES_SERVICE_HOST": "fd00::1",
                                     "KUBERNETES_SERVICE_PORT": "6443"})
    assert info.server == "https://[fd00::1]:6443"


def test_without_the_variables_kopf_s_choice_stands() -> None:
    assert in_cluster_address(INFO, {}) is INFO
    assert in_cluster_address(INFO, {"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                     "KUBERNETES_SERVICE_PORT": "https"}) is INFO

"""The dashboard the operator serves works where the Kubernetes client is not installed.

`respool run --dashboard-port` reads through `respool.dashboard.rest.RestSource` (the standard
library's HTTP client). These tests run it in a fresh interpreter in which ``kubernetes`` and
``urllib3`` cannot be imported (as in the operator's image), against a small stand-in API
server here that answers as the real one does (Status objects, paging, a watch stream, 401 for
a stale token, 403, 404, 410). Against the real API server, with the operator:
tests/e2e/test_dashboard_operator.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.unit.test_client_extra import WITHOUT_CLIENT

BASE = "/apis/respool.io/v1alpha1"


def _status(code: int, message: str, **details: Any) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "code": code, "details": details}


def _pool(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version},
            "spec": {"resources": {"execution": {"R_lite": [{"rank": "0-1"}],
                                                 "nodelist": ["n[0-1]"]}}}}


def _reservation(namespace: str, name: str, version: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
            "spec": {"pool": "rack-a"}, "status": {"phase": phase}}


class FakeApiServer(BaseHTTPRequestHandler):
    """Token ``good`` reads pools and the reservations of namespace ``team-a`` only."""

    watched_pools = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers.get("Authorization") != "Bearer good":
            return self._send(401, _status(401, "Unauthorized"))
        path = url.path
        if path == f"{BASE}/resourcepools" and query.get("watch"):
            return self._watch_pools(query)
        if path == f"{BASE}/resourcepools":
            if query.get("continue") == "page2":
                return self._send(200, {"metadata": {"resourceVersion": "10"},
                                        "items": [_pool("rack-b", "9")]})
            # Listed again after the watch expired: as it changed in that watch.
            rack_a = _pool("rack-a", "8") if not type(self).watched_pools else \
                {**_pool("rack-a", "12"), "status": {"message": "live"}}
            return self._send(200, {"metadata": {"resourceVersion": "10", "continue": "page2"},
                                    "items": [rack_a]})
        if path == f"{BASE}/resourcepools/rack-a":
            return self._send(200, _pool("rack-a", "8"))
        if path.startswith(f"{BASE}/resourcepools/"):
            return self._send(404, _status(404, "not found", kind="resourcepools",
                                            name=path.rsplit("/", 1)[1], group="respool.io"))
        if path == f"{BASE}/resourcereservations":
            return self._send(403, _status(403, "cannot list resourcereservations at the "
                                                "cluster scope"))
        if path == f"{BASE}/namespaces/team-a/resourcereservations":
            if query.get("watch"):
                return self._stream([], end=False)
            return self._send(200, {"metadata": {"resourceVersion": "11"},
                                    "items": [_reservation("team-a", "r1", "11", "Active")]})
        if path == f"{BASE}/namespaces/team-a/resourcereservations/r1":
            return self._send(200, {**_reservation("team-a", "r1", "11", "Active"),
                                    "metadata": {"name": "r1", "namespace": "team-a",
                                                 "managedFields": [{"manager": "x"}]}})
        if path == f"{BASE}/namespaces/team-a/resourcereservations/gone":
            return self._send(404, _status(404, "not found", kind="resourcereservations",
                                            name="gone", group="respool.io"))
        if path.startswith(f"{BASE}/namespaces/team-b/"):
            return self._send(403, _status(403, "forbidden in team-b"))
        if path == "/api/v1/namespaces/team-a/events":
            assert query["fieldSelector"] == \
                "involvedObject.kind=ResourceReservation,involvedObject.name=r1"
            return self._send(200, {"items": [
                {"reason": "Granted", "lastTimestamp": "2026-12-03T10:00:02Z"},
                {"reason": "Queued", "lastTimestamp": "2026-12-03T10:00:01Z"}]})
        return self._send(404, _status(404, "the server could not find the requested resource"))

    def _watch_pools(self, query: dict[str, str]) -> None:
        if query["resourceVersion"] == "expired":
            return self._send(410, _status(410, "too old resource version"))
        type(self).watched_pools += 1
        if type(self).watched_pools == 1:
            # The first watch: one change, a bookmark, then the version expires mid-stream.
            return self._stream([
                {"type": "MODIFIED", "object": {**_pool("rack-a", "12"),
                                                "status": {"message": "live"}}},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                {"type": "ERROR", "object": _status(410, "too old resource version")},
            ], end=True)
        return self._stream([], end=False)

    def _stream(self, events: list[dict[str, Any]], *, end: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        if not end:
            # Held open as a real watch is (the client's thread is a daemon).
            threading.Event().wait(5)
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def api_server() -> Iterator[str]:
    FakeApiServer.watched_pools = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Runs in the interpreter without the client: the reads and their errors, one line each.
READS = WITHOUT_CLIENT + """
import json, kopf
from respool.dashboard.rest import RestSource
from respool import errors

logins = iter(["stale", "good"])
def log_in():
    return kopf.ConnectionInfo(server=sys.argv[1], token=next(logins),
                               default_namespace="team-a")
source = RestSource(log_in(), relogin=log_in)
out = {}
out["pages"] = [([o["metadata"]["name"] for o in page], version)
                for page, version in source.list_pages("resourcepools", page_size=1)]
out["pool"] = source.get_pool("rack-a")["metadata"]["name"]
changes = []
try:
    for change, obj in source.watch("resourcepools", None, "10", timeout=5):
        changes.append((change, obj["metadata"]["resourceVersion"]))
except errors.ResourceVersionExpired:
    changes.append("expired")
out["watch"] = changes
def error(call, *args):
    try:
        call(*args)
    except errors.RespoolError as exc:
        return type(exc).__name__
try:
    next(iter(source.watch("resourcepools", None, "expired")))
except errors.ResourceVersionExpired:
    out["expired at once"] = True
out["errors"] = [
    error(lambda: list(source.list_pages("resourcereservations", None))),
    error(lambda: list(source.list_pages("resourcereservations", "team-b"))),
    error(source.get_reservation, "team-a", "gone"),
    error(source.get_pool, "rack-z"),
]
out["events"] = [e["reason"] for e in source.list_events("team-a", "ResourceReservation", "r1")]
out["modules"] = sorted(m for m, module in sys.modules.items() if module is not None and (
    m.split(".")[0] in {"kubernetes", "urllib3"} or m.startswith("respool.client")))
print(json.dumps(out))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)


def test_the_rest_source_reads_and_translates_errors_without_the_client(api_server: str) -> None:
    result = _python(READS, api_server)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pages"] == [[["rack-a"], "10"], [["rack-b"], "10"]]  # after a 401: logged in again
    assert out["pool"] == "rack-a"
    assert out["watch"] == [["MODIFIED", "12"], ["BOOKMARK", "13"], "expired"]
    assert out["expired at once"] is True
    assert out["errors"] == ["AccessDenied", "NamespaceForbidden", "ReservationNotFound",
                             "PoolNotFound"]
    assert out["events"] == ["Queued", "Granted"]
    assert out["modules"] == []


# The dashboard as `respool run --dashboard-port` builds it, without the client: serves the
# page's state (live from the watch), falls back to the login's namespace where listing every
# namespace is forbidden, and serves details.
SERVED = WITHOUT_CLIENT + """
import asyncio, json, threading, time, urllib.request, kopf
from respool.dashboard.rest import RestSource
from respool.dashboard.server import build_app, serve

source = RestSource(kopf.ConnectionInfo(server=sys.argv[1], token="good",
                                        default_namespace="team-a"))
app = build_app(source, namespace=None)
urls = []
threading.Thread(target=lambda: asyncio.run(serve(app, "127.0.0.1", 0, urls.append)),
                 daemon=True).start()
def get(path):
    with urllib.request.urlopen(urls[0].rstrip("/") + path, timeout=30) as answer:
        return json.loads(answer.read())
deadline = time.monotonic() + 60
while True:
    if urls:
        state = get("/api/state")
        messages = {p["name"]: p["message"] for p in state["pools"]}
        if messages.get("rack-a") == "live" and state["reservations"]:
            break
    assert time.monotonic() < deadline, state
    time.sleep(0.05)
details = get("/api/reservations/team-a/r1")
print(json.dumps({"pools": sorted(messages), "health": state["health"],
                  "reservations": [r["key"] for r in state["reservations"]],
                  "details": details}))
"""


def test_the_operator_served_dashboard_works_without_the_client(api_server: str) -> None:
    result = _python(SERVED, api_server)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pools"] == ["rack-a", "rack-b"]
    assert out["reservations"] == ["team-a/r1"]
    assert out["health"]["reservation"]["scope"] == "namespace team-a"
    assert out["details"]["object"]["metadata"] == {"name": "r1", "namespace": "team-a"}
    assert [e["reason"] for e in out["details"]["events"]] == ["Queued", "Granted"]


def test_the_operator_builds_its_dashboard_without_the_client(tmp_path: Any) -> None:
    # `respool run`'s own start-up of the dashboard (credentials from a kubeconfig, as kopf
    # reads it), up to the port being served.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                               "namespace": "team-a"}}]}))
    code = WITHOUT_CLIENT + (
        "import os, time, logging\n"
        "os.environ['KUBECONFIG'] = sys.argv[1]\n"
        "os.environ.pop('KUBERNETES_SERVICE_HOST', None)\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from respool.cli.run import _start_dashboard\n"
        "_start_dashboard('127.0.0.1', 0)\n"
        "time.sleep(3)\n"
    )
    result = _python(code, str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert "dashboard serving on http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr

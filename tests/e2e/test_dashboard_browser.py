"""`respool dashboard` in a real browser (headless Chromium) against the real API server, with
the operator running: pools and their bookings are drawn, a reservation created through the
API appears without a reload, a deleted one disappears, details show conditions and Events,
and the server is read-only and answers only local names. Screenshots are kept in
.respool/artifacts/dashboard/.
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.browser import ARTIFACTS, DashboardProcess, start_chromium, stop_chromium
from tests.e2e.conftest import OperatorProcess, RespoolKube

WAIT = 30.0  # generous upper bound: how fast a change shows is measured in bench/, not here


def _pool_spec(name: str, ranks: int = 4, down: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"version": 1, "execution": {
        "R_lite": [{"rank": f"0-{ranks - 1}", "children": {"core": "0-7"}}],
        "nodelist": [f"{name}-n[0-{ranks - 1}]"]}}}
    if down:
        spec["down"] = down
    return spec


@pytest.fixture
def dashboard(kube_env: dict[str, str], crds: list[str], tmp_path: Path) -> Iterator[DashboardProcess]:
    process = DashboardProcess(kube_env, tmp_path / "dashboard.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        assert "Traceback" not in process.log_text(), process.log_text()[-4000:]


@pytest.fixture
def browser() -> Iterator[Any]:
    chrome = start_chromium()
    try:
        yield chrome
    finally:
        stop_chromium(chrome)


def _shot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def _wait(browser: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws a pool's section when an event arrives, so an element found in one
    # poll can be gone by the next read: that poll is "not yet", not a failure.
    try:
        return WebDriverWait(browser, WAIT, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        _shot(browser, "failure")
        raise AssertionError(f"the page did not show {what} in {WAIT}s") from None


def _settled(check: Any) -> None:
    """Run a block of checks over elements, again from the start if the page redrew them
    mid-block (a redraw replaces the elements; the checks themselves are unchanged)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(5):
        try:
            check()
            return
        except StaleElementReferenceException:
            if attempt == 4:
                raise
            time.sleep(0.2)


def _booking(browser: Any, key: str) -> Any:
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, f'g.booking[data-key="{key}"]')
    return found[0] if found else None


def test_pools_bookings_and_live_changes(
    operator: OperatorProcess, rk: RespoolKube, namespace: str, dashboard: DashboardProcess,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    pool = f"dash-{secrets.token_hex(3)}"
    rk.create_pool(pool, _pool_spec(pool, ranks=4, down="3"))
    rk.create(namespace, "held-now", {"pool": pool, "duration": "2h", "request": {"nodes": 2}})
    rk.create(namespace, "watching", {"pool": pool, "mode": "shared", "duration": "5h",
                                     "request": {"nodes": 1, "slots": 1, "coresPerSlot": 1}})
    later = time.time() + 3 * 3600
    rk.create(namespace, "tonight", {
        "pool": pool, "request": {"nodes": 2},
        "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later)),
        "endTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later + 2 * 3600))})
    rk.wait_phase(namespace, "held-now", "Active")
    rk.wait_phase(namespace, "watching", "Active")
    rk.wait_phase(namespace, "tonight", "Scheduled")

    browser.get(dashboard.url + "?" + urllib.parse.urlencode({"pool": pool}))
    _wait(browser, lambda b: b.find_elements(By.ID, f"pool-{pool}"), f"pool {pool}")
    for name in ("held-now", "watching", "tonight"):
        _wait(browser, lambda b, n=name: _booking(b, f"{namespace}/{n}"), f"booking {name}")

    def drawn_as_expected() -> None:
        section = browser.find_element(By.ID, f"pool-{pool}")
        # Phases and modes are drawn distinctly, and said in words for assistive technology.
        held = _booking(browser, f"{namespace}/held-now")
        assert held.find_elements(By.CSS_SELECTOR, "rect.phase-Active")
        assert "Active" in held.get_attribute("aria-label")
        assert held.get_attribute("tabindex") == "0"
        assert _booking(browser, f"{namespace}/tonight").find_elements(By.CSS_SELECTOR, "rect.phase-Scheduled")
        assert _booking(browser, f"{namespace}/watching").find_elements(By.CSS_SELECTOR, "rect.shared-stripes")
        # Rank 3 is down: its row says so, and the now-line is drawn.
        labels = [t.text for t in section.find_elements(By.CSS_SELECTOR, "text.rank-text")]
        assert f"{pool}-n3 (down)" in labels, labels
        assert section.find_elements(By.CSS_SELECTOR, "rect.down-row")
        assert section.find_elements(By.CSS_SELECTOR, "line.now-line")
        assert "Nodes free" in section.text

    _settled(drawn_as_expected)
    _shot(browser, "pool")

    # Live: a reservation created through the API shows without a reload; so does its grant.
    browser.execute_script("window.respoolNoReload = 'still here'")
    rk.create(namespace, "fresh", {"pool": pool, "duration": "1h", "request": {"nodes": 1}})
    _wait(browser, lambda b: _booking(b, f"{namespace}/fresh")
          or b.find_elements(By.CSS_SELECTOR, f'button[data-key="{namespace}/fresh"]'),
          "the new reservation")
    _wait(browser, lambda b: _booking(b, f"{namespace}/fresh")
          and _booking(b, f"{namespace}/fresh").find_elements(By.CSS_SELECTOR, "rect.phase-Active"),
          "the new reservation granted")
    assert browser.execute_script("return window.respoolNoReload") == "still here"
    _shot(browser, "created")

    # A deleted one disappears, again without a reload.
    rk.delete(namespace, "fresh")
    _wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, f'[data-key="{namespace}/fresh"]'),
          "the deleted reservation gone")
    assert browser.execute_script("return window.respoolNoReload") == "still here"

    # Details by keyboard: focus the booking, Enter opens them; Escape closes.
    held = _booking(browser, f"{namespace}/held-now")
    browser.execute_script("arguments[0].focus()", held)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    dialog = _wait(browser, lambda b: b.find_element(By.ID, "details").is_displayed()
                   and "Conditions" in b.find_element(By.ID, "details").text
                   and b.find_element(By.ID, "details"), "the details dialog")
    text = dialog.text
    assert f"Reservation {namespace}/held-now" in text
    assert "Active" in text and "Events" in text and '"duration": "2h"' in text
    posted = {e.reason for e in rk.events(namespace, "held-now")}
    if posted:  # every Event the operator posted about it is listed
        _wait(browser, lambda b: all(r in b.find_element(By.ID, "details").text for r in posted),
              f"the Events {sorted(posted)}")
    _shot(browser, "details")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    _wait(browser, lambda b: not b.find_element(By.ID, "details").is_displayed(), "the dialog closed")

    # Zoom to a week: the button says it is pressed and the bookings are still drawn.
    week = browser.find_element(By.CSS_SELECTOR, '.zoom button[data-span="168"]')
    week.click()
    assert week.get_attribute("aria-pressed") == "true"
    _wait(browser, lambda b: _booking(b, f"{namespace}/tonight"), "the bookings at a week's zoom")
    _shot(browser, "week")


def test_namespace_filter(
    operator: OperatorProcess, rk: RespoolKube, namespace: str, dashboard: DashboardProcess,
    browser: Any, kubectl: Any,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    pool = f"dash-{secrets.token_hex(3)}"
    other = f"{namespace}-other"
    kubectl("create", "namespace", other)
    rk.create_pool(pool, _pool_spec(pool, ranks=2))
    rk.create(namespace, "mine", {"pool": pool, "duration": "1h", "request": {"nodes": 1}})
    rk.create(other, "theirs", {"pool": pool, "duration": "1h", "request": {"nodes": 1}})
    browser.get(dashboard.url + "?" + urllib.parse.urlencode({"pool": pool}))
    _wait(browser, lambda b: _booking(b, f"{namespace}/mine") and _booking(b, f"{other}/theirs"),
          "both namespaces' bookings")
    Select(browser.find_element(By.ID, "namespace")).select_by_value(namespace)
    _wait(browser, lambda b: not _booking(b, f"{other}/theirs"), "only the chosen namespace")
    assert _booking(browser, f"{namespace}/mine")
    assert f"namespace={namespace}" in browser.current_url
    # The filter survives a reload (it is in the address).
    browser.refresh()
    _wait(browser, lambda b: _booking(b, f"{namespace}/mine"), "the filtered page after a reload")
    assert not _booking(browser, f"{other}/theirs")
    kubectl("delete", "namespace", other, "--wait=false")


def _request(url: str, method: str = "GET", host: str | None = None) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"Host": host} if host else {}
    connection.request(method, parts.path or "/", headers=headers)
    return connection.getresponse()


def test_read_only_and_local_names_only(dashboard: DashboardProcess, operator: OperatorProcess) -> None:
    index = _request(dashboard.url)
    assert index.status == 200
    assert "default-src 'self'" in index.getheader("Content-Security-Policy", "")
    body = index.read().decode()
    assert "http://" not in body and "https://" not in body  # nothing from elsewhere
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _request(dashboard.url + "api/state", method).status == 405
    # A page elsewhere that rebinds its name to 127.0.0.1 gets nothing.
    assert _request(dashboard.url + "api/state", host="attacker.example:80").status == 403
    deadline = time.monotonic() + WAIT
    while _request(dashboard.url + "healthz").status != 200:
        assert time.monotonic() < deadline, "the dashboard never listed pools and reservations"
        time.sleep(0.1)
    state = json.loads(_request(dashboard.url + "api/state").read())
    assert state["health"]["reservation"]["scope"] == "all namespaces"
    assert _request(dashboard.url + "api/reservations/nowhere/none").status == 404


def test_every_pool_is_drawn_when_more_than_a_screen(
    operator: OperatorProcess, rk: RespoolKube, namespace: str, dashboard: DashboardProcess,
    browser: Any,
) -> None:
    """The first pools are drawn at once and the others in the tasks after the first paint
    (app.js FIRST_POOLS): all of them, with their bookings, end up on the page."""

    prefix = f"dash-many-{secrets.token_hex(2)}"
    names = [f"{prefix}-{number:02d}" for number in range(9)]
    for name in names:
        rk.create_pool(name, _pool_spec(name, ranks=2))
        rk.create(namespace, f"on-{name}", {"pool": name, "duration": "1h", "request": {"nodes": 1}})
    for name in names:
        rk.wait_phase(namespace, f"on-{name}", "Active")
    browser.get(dashboard.url)
    _wait(browser, lambda b: b.execute_script("return document.body.dataset.complete === '1'"),
          "every pool drawn")
    # Read in one script so a redraw between two reads cannot hand back a vanished element.
    drawn = set(browser.execute_script(
        "return Array.from(document.querySelectorAll('section.pool'), s => s.dataset.pool)"))
    assert set(names) <= drawn, sorted(set(names) - drawn)
    booked = set(browser.execute_script(
        "return Array.from(document.querySelectorAll('g.booking'), g => g.dataset.key)"))
    missing = {f"{namespace}/on-{name}" for name in names} - booked
    assert not missing, sorted(missing)


def test_shows_what_the_users_own_credentials_may_read(
    rk: RespoolKube, namespace: str, kubectl: Any, kube_env: dict[str, str], crds: list[str],
    tmp_path: Path,
) -> None:
    """A user who may read reservations only in their namespace (and pools) sees exactly that:
    the dashboard falls back from every namespace to the kubeconfig's, like kubectl."""
    import yaml

    pool = f"dash-{secrets.token_hex(3)}"
    other = f"{namespace}-hidden"
    kubectl("create", "namespace", other)
    rk.create_pool(pool, _pool_spec(pool, ranks=2))
    rk.create(namespace, "visible", {"pool": pool, "duration": "1h", "request": {"nodes": 1}})
    rk.create(other, "hidden", {"pool": pool, "duration": "1h", "request": {"nodes": 1}})
    user, reader = f"viewer-{secrets.token_hex(2)}", f"dash-pool-reader-{secrets.token_hex(2)}"
    kubectl("create", "serviceaccount", user, "-n", namespace)
    kubectl("create", "role", "reservation-reader", "-n", namespace, "--verb=get,list,watch",
            "--resource=resourcereservations.respool.io,events")
    kubectl("create", "rolebinding", "reservation-reader", "-n", namespace,
            "--role=reservation-reader", f"--serviceaccount={namespace}:{user}")
    kubectl("create", "clusterrole", reader, "--verb=get,list,watch", "--resource=resourcepools.respool.io")
    kubectl("create", "clusterrolebinding", reader, f"--clusterrole={reader}",
            f"--serviceaccount={namespace}:{user}")
    token = kubectl("create", "token", user, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(kube_env["KUBECONFIG"]).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    limited = tmp_path / "viewer.kubeconfig"
    limited.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user,
                                                 "namespace": namespace}}],
        "current-context": user}))
    dashboard = DashboardProcess(dict(kube_env, KUBECONFIG=str(limited)), tmp_path / "dashboard.log")
    dashboard.start()
    try:
        deadline = time.monotonic() + WAIT
        while True:
            state = json.loads(_request(dashboard.url + "api/state").read())
            keys = {r["key"] for r in state["reservations"]}
            if state["health"]["reservation"]["synced"] and f"{namespace}/visible" in keys \
                    and pool in {p["name"] for p in state["pools"]}:
                break
            assert time.monotonic() < deadline, state["health"]
            time.sleep(0.1)
        assert state["health"]["reservation"]["scope"] == f"namespace {namespace}"
        assert f"{other}/hidden" not in keys
        assert all(key.startswith(f"{namespace}/") for key in keys)
        assert _request(dashboard.url + f"api/reservations/{namespace}/visible").status == 200
        assert _request(dashboard.url + f"api/reservations/{other}/hidden").status == 403
    finally:
        dashboard.stop()
        kubectl("delete", "clusterrolebinding,clusterrole", reader, check=False)
        kubectl("delete", "namespace", other, "--wait=false", check=False)
    assert "Traceback" not in dashboard.log_text(), dashboard.log_text()[-4000:]


def test_waiting_reservations_show_their_place_in_line(
    operator: OperatorProcess, rk: RespoolKube, namespace: str, dashboard: DashboardProcess,
    browser: Any,
) -> None:
    """The waiting list is in the pool's queue order, with each waiter's place and projected
    start (status.queuePosition, status.startNoLaterThan); the details say both."""
    from selenium.webdriver.common.by import By

    pool = f"line-{secrets.token_hex(3)}"
    rk.create_pool(pool, _pool_spec(pool, ranks=1))
    waiting = {"request": {"nodes": 1, "exclusive": True}, "nextAvailable": False,
               "maxRetry": 50}
    rk.create(namespace, "holder", {"pool": pool, "duration": "2h", **waiting})
    rk.wait_phase(namespace, "holder", "Active")
    for name in ("first", "second"):
        rk.create(namespace, name, {"pool": pool, "duration": "1h", **waiting})
        rk.wait_phase(namespace, name, "Pending")

    browser.get(dashboard.url + "?" + urllib.parse.urlencode({"pool": pool}))
    section_id = f"pool-{pool}"
    _wait(browser, lambda b: "#2 in line" in b.find_element(By.ID, section_id).text,
          "the second waiter's place in line")

    def listed_in_order() -> None:
        items = browser.find_element(By.ID, section_id).find_elements(By.CSS_SELECTOR, ".waiting li")
        assert [i.text.split()[0] for i in items[:2]] == [f"{namespace}/first", f"{namespace}/second"]
        assert "#1 in line, starts by" in items[0].text
        items[1].find_element(By.CSS_SELECTOR, "button").click()

    _settled(listed_in_order)
    _wait(browser, lambda b: "Queue position" in b.find_element(By.ID, "details").text,
          "the queue position in the details")
    text = browser.find_element(By.ID, "details").text
    assert "2 (1 = next when capacity frees)" in text and "Starts no later than" in text
    _shot(browser, "queue")


def test_maintenance_windows_are_drawn_on_the_timeline(
    operator: OperatorProcess, rk: RespoolKube, dashboard: DashboardProcess, browser: Any,
) -> None:
    """Issue 14: the operator's status.maintenance is drawn over the ranks it takes out, and
    says what it is (name, window, mode, reason) on hover."""
    from selenium.webdriver.common.by import By

    pool = f"dash-{secrets.token_hex(3)}"
    spec = _pool_spec(pool, ranks=4)
    start = int(time.time()) + 3600
    spec["maintenance"] = [{"name": "firmware", "ranks": "1-2", "reason": "BIOS update",
                            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                            "duration": "2h", "mode": "Evict"}]
    rk.create_pool(pool, spec)
    try:
        rk.wait_pool(pool, lambda o: bool((o.get("status") or {}).get("maintenance")),
                     what="status.maintenance")
        browser.get(dashboard.url + "?" + urllib.parse.urlencode({"pool": pool}))
        selector = 'rect.maintenance-zone[data-maintenance="firmware"]'
        _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, selector), "the maintenance")

        def drawn() -> None:
            zones = browser.find_elements(By.CSS_SELECTOR, selector)
            assert len(zones) == 2  # ranks 1 and 2, one row each
            title = zones[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
            assert "maintenance 'firmware'" in title and "(Evict): BIOS update" in title

        _settled(drawn)
        _shot(browser, "maintenance")
    finally:
        rk.delete_pool(pool)

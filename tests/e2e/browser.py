"""A real browser and a real `respool dashboard` for the dashboard's tests and benchmark.

Headless Chromium from Debian's ``chromium`` and ``chromium-driver`` packages, driven with
selenium. A missing browser is an error naming the packages to install, never a skip
(.ci/run installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".respool" / "artifacts" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)
INSTALL_HINT = "install Debian's packages: apt-get install -y chromium chromium-driver"


class BrowserMissing(RuntimeError):
    pass


def chromium_paths() -> tuple[str, str]:
    """The chromium and chromedriver executables ($RESPOOL_CHROMIUM, $RESPOOL_CHROMEDRIVER, or
    found on PATH)."""
    browser = os.environ.get("RESPOOL_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    driver = os.environ.get("RESPOOL_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        missing = [name for name, found in (("chromium", browser), ("chromedriver", driver)) if not found]
        raise BrowserMissing(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    return browser, driver


def start_chromium(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium with a fresh profile (removed by `stop_chromium`)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # the test extra is not installed
        raise BrowserMissing(f"selenium is not installed ({exc}): pip install -e '.[test]'") from exc
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="respool-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.respool_profile = profile
    return chrome


def stop_chromium(chrome: Any) -> None:
    try:
        chrome.quit()
    finally:
        shutil.rmtree(getattr(chrome, "respool_profile", ""), ignore_errors=True)


class DashboardProcess:
    """`respool dashboard --port 0` in a subprocess; `url` once it listens."""

    def __init__(self, env: dict[str, str], log_path: Path, extra_args: list[str] | None = None):
        self.env = dict(env, PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> str:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "respool.cli.main", "dashboard", "--port", "0", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"respool dashboard: (http://\S+/)", self.log_text())
            if found:
                self.url = found[1]
                return self.url
            if self.process.poll() is not None:
                raise AssertionError(f"the dashboard exited with {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"the dashboard did not start in {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_bytes(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

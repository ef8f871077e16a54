"""A git server on loopback: git's own `git http-backend` behind a small CGI bridge.

Flux's source-controller clones with go-git, which speaks git's smart HTTP protocol (not the
dumb one), so the repositories are served by `git http-backend`, the CGI program git ships for
exactly that; this module is the web server around it (Python's CGI handler is deprecated).
Read-only: only upload-pack (clone and fetch) is answered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


def http_backend() -> str:
    """The path of `git http-backend` (in git's exec path, not on PATH)."""
    git = shutil.which("git")
    assert git, "git is needed to serve the GitOps test's repository"
    exec_path = subprocess.run([git, "--exec-path"], capture_output=True, text=True,
                               check=True, timeout=30).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    assert os.access(backend, os.X_OK), f"git's http-backend is missing at {backend}"
    return str(backend)


def _handler(project_root: Path, backend: str) -> type[BaseHTTPRequestHandler]:
    class GitHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._cgi()

        def do_POST(self) -> None:
            self._cgi()

        def log_message(self, format: str, *args: object) -> None:
            return  # the test's output stays readable

        def _cgi(self) -> None:
            url = urlsplit(self.path)
            if url.path.endswith("/git-receive-pack") or "service=git-receive-pack" in url.query:
                self.send_error(403, "read-only")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(project_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
                "SERVER_PROTOCOL": "HTTP/1.1",
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            completed = subprocess.run([backend], input=body, capture_output=True, env=env,
                                       timeout=120, check=False)
            head, _, payload = completed.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = completed.stdout.partition(b"\n\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return GitHandler


@contextmanager
def serve_git(project_root: Path) -> Iterator[str]:
    """Serve the bare repositories under ``project_root`` on 127.0.0.1; yields the base URL
    (``http://127.0.0.1:PORT``), a repository ``x.git`` being at ``BASE/x.git``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(project_root, http_backend()))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

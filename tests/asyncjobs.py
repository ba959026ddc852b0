"""A real HTTP server on 127.0.0.1 offering asynchronous jobs, for tests of http actions.

API:
    POST   /jobs        JSON {"duration": s, "fail": bool, "name": str}
                        -> 202 {"id", "status": "running", "href": "/jobs/<id>"} + Location.
                        A repeated Idempotency-Key returns the job it created, with 200.
    GET    /jobs/<id>   -> 200 {"id", "status": running|succeeded|failed|cancelled, "name"}
    DELETE /jobs/<id>   -> 200 and status "cancelled" (409 when the job already ended)
    *      /echo        -> 200 {"method", "path", "headers", "json"} of the request

Knobs for tests: ``flaky_polls = N`` answers the next N ``GET /jobs/<id>`` with 503;
``requests`` records ``(method, path, headers)`` of every request; ``jobs`` maps ids to
``Job`` records.

    with AsyncJobsServer() as server:
        url = server.url + "/jobs"
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["AsyncJobsServer", "Job"]


@dataclass
class Job:
    """One job; it runs for ``duration`` seconds from ``started`` unless cancelled."""

    id: str
    name: str
    duration: float
    fail: bool
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        if time.monotonic() - self.started < self.duration:
            return "running"
        return "failed" if self.fail else "succeeded"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "name": self.name}


class AsyncJobsServer:
    """The jobs server, listening on 127.0.0.1 on a free port while used as a context manager."""

    def __init__(self) -> None:
        self.flaky_polls = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it in a `with` block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AsyncJobsServer:
        handler = type("Handler", (_Handler,), {"jobs_server": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> AsyncJobsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Called by the handler threads, under the lock.

    def _create(self, spec: dict[str, Any], key: str | None) -> tuple[int, Job]:
        if key is not None and key in self._by_key:
            return 200, self.jobs[self._by_key[key]]
        job = Job(
            id=f"job-{len(self.jobs) + 1}",
            name=str(spec.get("name", "")),
            duration=float(spec.get("duration", 0)),
            fail=bool(spec.get("fail", False)),
        )
        self.jobs[job.id] = job
        if key is not None:
            self._by_key[key] = job.id
        return 202, job

    def _take_flaky_poll(self) -> bool:
        if self.flaky_polls > 0:
            self.flaky_polls -= 1
            return True
        return False


class _Handler(BaseHTTPRequestHandler):
    jobs_server: AsyncJobsServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real services do
    timeout = 5  # idle keep-alive connections end, so threads do not linger

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _handle(self) -> None:
        server = self.jobs_server
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        with server._lock:
            server.requests.append((self.command, self.path, headers))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        method = self.command
        if path == "/echo":
            self._send(200, {"method": method, "path": self.path, "headers": headers, "json": body})
        elif path == "/jobs" and method == "POST":
            if not isinstance(body, dict):
                self._send(400, {"error": "expected a JSON object"})
                return
            with server._lock:
                status, job = server._create(body, self.headers.get("Idempotency-Key"))
            href = f"/jobs/{job.id}"
            self._send(status, {**job.as_json(), "href": href}, {"Location": href})
        elif path.startswith("/jobs/"):
            self._job(method, path.removeprefix("/jobs/"))
        else:
            self._send(404, {"error": f"no route {method} {path}"})

    def _job(self, method: str, job_id: str) -> None:
        server = self.jobs_server
        with server._lock:
            job = server.jobs.get(job_id)
            flaky = method == "GET" and job is not None and server._take_flaky_poll()
        if job is None:
            self._send(404, {"error": f"no job {job_id}"})
        elif flaky:
            self._send(503, {"error": "try again"}, {"Retry-After": "0"})
        elif method == "GET":
            self._send(200, job.as_json())
        elif method == "DELETE":
            with server._lock:
                running = job.status == "running"
                job.cancelled = job.cancelled or running
            if running:
                self._send(200, job.as_json())
            else:
                self._send(409, {**job.as_json(), "error": "job already ended"})
        else:
            self._send(405, {"error": f"{method} not allowed on a job"})

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

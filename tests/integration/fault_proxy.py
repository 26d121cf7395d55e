"""A fault-injecting HTTP proxy between boto3 and moto's server.

Faults cross a real socket: a rule can answer a matching request with an HTTP status,
cut the connection half-way through reading the request body, or add latency before
forwarding. Everything else is forwarded to moto unchanged.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlparse


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def amz_target(self) -> str:
        return self.headers.get("x-amz-target", "")


@dataclass
class Rule:
    """Apply `action` to matching requests number `first`..`first + times - 1` (1-based)."""

    matches: Callable[[Request], bool]
    action: Literal["status", "cut", "delay"]
    status: int = 500
    delay_seconds: float = 0.0
    first: int = 1
    times: int = 1_000_000
    seen: int = 0
    applied: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def should_apply(self, request: Request) -> bool:
        if not self.matches(request):
            return False
        with self.lock:
            self.seen += 1
            hit = self.first <= self.seen < self.first + self.times
            if hit:
                self.applied += 1
            return hit


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        peek = Request(self.command, self.path, headers, b"")
        for rule in self.server.rules:
            if rule.action == "cut" and rule.should_apply(peek):
                # Read half the body, then drop the connection: the client sees a reset.
                self.rfile.read(length // 2)
                self.close_connection = True
                self.connection.shutdown(2)
                return
        request = Request(self.command, self.path, headers, self._read_body())
        for rule in self.server.rules:
            if rule.action == "cut":
                continue
            if rule.should_apply(request):
                if rule.action == "delay":
                    time.sleep(rule.delay_seconds)
                    break
                payload = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
                if "x-amz-target" in headers:
                    payload = b'{"__type": "InternalServerError", "message": "injected fault"}'
                self.send_response(rule.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        self._forward(request)

    def _forward(self, request: Request) -> None:
        upstream = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=60
        )
        try:
            upstream.request(
                request.method,
                request.path,
                body=request.body or None,
                headers={k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"},
            )
            response = upstream.getresponse()
            body = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if request.method != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parsed = urlparse(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.rules: list[Rule] = []


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self._server = _ProxyServer(upstream)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, rule: Rule) -> Rule:
        self._server.rules.append(rule)
        return rule

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def s3_upload_part(request: Request) -> bool:
    return request.method == "PUT" and "partNumber=" in request.path


def s3_complete_upload(request: Request) -> bool:
    return request.method == "POST" and "uploadId=" in request.path


def s3_put_tagging(request: Request) -> bool:
    query = urlparse(request.path).query
    return request.method == "PUT" and "tagging" in query.split("&")


def dynamodb(operation: str, containing: bytes = b"") -> Callable[[Request], bool]:
    def matches(request: Request) -> bool:
        return request.amz_target.endswith(f".{operation}") and containing in request.body

    return matches

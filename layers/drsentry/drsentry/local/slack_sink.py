"""A stand-in for a Slack incoming webhook: records every POST, one JSON a line.

Run by `drsentry local up` as a process (``python -m drsentry.local.slack_sink``), and
by the tests in a thread (``SlackSink``). ``status`` lets a test play a Slack outage
(answer 500) without touching the code under test.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _SinkServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(body)
        except json.JSONDecodeError:
            payload = {"raw": body}
        status = self.server.status
        if status == 200:
            with self.server.lock:
                self.server.posts.append({"path": self.path, "payload": payload})
                if self.server.log_path:
                    with self.server.log_path.open("a", encoding="utf-8") as log:
                        log.write(json.dumps({"path": self.path, "payload": payload}) + "\n")
        reply = b"ok" if status == 200 else b"internal_error"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        return


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, log_path: Path | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.log_path = log_path
        self.status = 200


class SlackSink:
    """In-process sink for tests: ``with SlackSink() as sink: ... sink.posts``."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._server = _SinkServer(0, log_path)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/services/T000/B000/local"

    @property
    def posts(self) -> list[dict[str, Any]]:
        with self._server.lock:
            return [post["payload"] for post in self._server.posts]

    def fail_with(self, status: int) -> None:
        """Answer every following post with `status` (200 restores normal service)."""
        self._server.status = status

    def __enter__(self) -> SlackSink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Record Slack webhook posts, one JSON a line.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    server = _SinkServer(args.port, args.log)
    server.serve_forever()


if __name__ == "__main__":
    main()

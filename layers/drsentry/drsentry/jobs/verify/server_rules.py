"""The pure rules of a throwaway verify server: can these binaries restore this backup (version,
extensions), does the backup fit in the scratch space, and what a server that ran out of space
says. Each problem is one line naming what is missing and the two ways out."""

from __future__ import annotations

import re

from drsentry.core.errors import PgToolsError

MB = 1024 * 1024
# The verify function's /tmp (Lambda's EphemeralStorage) is set by this template parameter.
SPACE_PARAMETER = "VerifyEphemeralStorageMB"
MAX_EPHEMERAL_STORAGE_MB = 10240
WAYS_OUT = "use a pgtools layer or image that has {what}, or set verify.scratch_dsn to a standing server"
# PostgreSQL's words for a full disk: the OS error, and a relation that cannot grow.
_DISK_FULL = re.compile(r"no space left on device|could not extend file|disk full", re.IGNORECASE)


def _major(version: str) -> int:
    match = re.match(r"\s*(\d+)", version)
    if match is None:
        raise PgToolsError(f"cannot read a PostgreSQL major version from {version!r}")
    return int(match.group(1))


def version_problem(source_version: str | None, server_version: str) -> str | None:
    """A newer major restores older dumps; an older one may not (pg_restore refuses, or the SQL fails)."""
    if not source_version:
        return None
    needed = _major(source_version)
    if _major(server_version) >= needed:
        return None
    return (
        f"the backup is of PostgreSQL {source_version} and the throwaway verify server's binaries are "
        f"PostgreSQL {server_version}: {WAYS_OUT.format(what=f'PostgreSQL {needed} or newer')}"
    )


def extensions_problem(needed: list[str], available: set[str], server_version: str) -> str | None:
    missing = sorted(set(needed) - available)
    if not missing:
        return None
    names = ", ".join(missing)
    noun = "extension" if len(missing) == 1 else "extensions"
    return (
        f"the backup needs {noun} {names}, which the throwaway verify server (PostgreSQL "
        f"{server_version}) lacks: {WAYS_OUT.format(what=names)}"
    )


def space_problem(database_size_bytes: int | None, overhead_bytes: int, free_bytes: int) -> str | None:
    """Before the restore: the source database's size at backup time plus the server's own files
    must fit. Unknown size (a record from before sizes were kept): the restore itself will tell."""
    if database_size_bytes is None:
        return None
    needed = database_size_bytes + overhead_bytes
    if needed <= free_bytes:
        return None
    return space_message(needed, free_bytes)


def space_message(needed_bytes: int | None, free_bytes: int) -> str:
    needed = f"about {needed_bytes / MB:,.0f} MB" if needed_bytes is not None else "more"
    return (
        f"scratch space exhausted: the restore needs {needed} and the scratch directory has "
        f"{free_bytes / MB:,.0f} MB free; raise the template parameter {SPACE_PARAMETER} (the verify "
        f"function's /tmp, up to {MAX_EPHEMERAL_STORAGE_MB} MB), point TMPDIR at a larger disk, or set "
        "verify.scratch_dsn"
    )


def ran_out_of_space(restore_error: str | None) -> bool:
    return bool(restore_error and _DISK_FULL.search(restore_error))

"""Verify's roles step, as a real recovery does it: before pg_restore, the roles the backup
needs and the scratch server lacks are created there from the backup's roles object."""

from __future__ import annotations

import hashlib

from drsentry.adapters import postgres
from drsentry.core.errors import PostgresError, StorageError
from drsentry.core.globals import ClusterRoles, GlobalsUnreadable, parse_globals
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord
from drsentry.jobs.roles import roles_object_bytes, roles_on_server
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.rules import CHECK_RESTORE, RolesRestored, StepFailed, globals_problem
from drsentry.jobs.verify.scratch import connect


def bring_roles(
    runtime: Runtime, backup: BackupRecord, server_dsn: str, scratch_db: str, *, throwaway: bool
) -> RolesRestored:
    """Before pg_restore, as a real recovery does: the roles the backup needs and the scratch
    server lacks, created there from the backup's roles object (read whole, a few kilobytes,
    and judged against the record). Created roles stay: they belong to the whole server, and a
    concurrent verification may be restoring objects owned by them."""
    roles = RolesRestored(throwaway_server=throwaway)
    backup_globals = backup.globals
    if backup_globals is None:
        return roles
    try:
        if runtime.store.head(backup.bucket, backup_globals.key) is None:
            roles.object_problem = globals_problem(backup, None)
            return roles
        data = roles_object_bytes(runtime.store, backup)
    except StorageError as exc:
        roles.object_problem = f"roles object unreadable: {exc}"
        return roles
    roles.object_problem = globals_problem(backup, (len(data), hashlib.sha256(data).hexdigest()))
    if roles.object_problem:
        # Not the backup's roles: nothing is created from it (the object checksum fails).
        return roles
    try:
        cluster = parse_globals(data.decode("utf-8"))
    except (GlobalsUnreadable, UnicodeDecodeError) as exc:
        raise StepFailed(CHECK_RESTORE, f"the backup's roles object cannot be read: {exc}") from exc
    needed = backup_globals.roles
    roles.not_in_globals = sorted(set(needed) - set(cluster.roles))
    roles.created = _create_missing_roles(backup, server_dsn, cluster, needed, scratch_db)
    return roles


def _create_missing_roles(
    backup: BackupRecord, server_dsn: str, cluster: ClusterRoles, needed: list[str], scratch_db: str
) -> list[str]:
    admin = connect(server_dsn, "scratch server unreachable")
    try:
        with admin:
            # Twice at most: a concurrent verification may create the same role meanwhile.
            for attempt in (1, 2):
                on_server = roles_on_server(cluster, needed, admin, scratch_db)
                creation = on_server.creation
                if creation.not_in_globals:
                    raise StepFailed(
                        CHECK_RESTORE,
                        f"roles {', '.join(creation.not_in_globals)} are referenced by backup "
                        f"{backup.backup_id} and exist neither on the scratch server nor in the "
                        "backup's roles object: a blank server could not restore it",
                    )
                if creation.created and not on_server.may_create:
                    raise StepFailed(
                        CHECK_RESTORE,
                        f"the scratch server lacks roles {', '.join(creation.created)} and the verify "
                        "user may not create roles (needs CREATEROLE or superuser)",
                    )
                if not creation.statements:
                    return []
                try:
                    admin.run_role_statements(creation.statements)
                except postgres.RoleNotCreated as exc:
                    if attempt == 2:
                        raise StepFailed(CHECK_RESTORE, f"scratch server: {exc}") from exc
                    continue
                logger.info(
                    "roles created on the scratch server",
                    extra={"backup_id": backup.backup_id, "roles": creation.created},
                )
                return creation.created
    except PostgresError as exc:
        raise StepFailed(CHECK_RESTORE, f"scratch server: {exc}") from exc
    raise AssertionError("unreachable: the second attempt returns or raises")

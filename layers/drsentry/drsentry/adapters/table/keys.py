"""The catalog table's key layout: the only module that spells a key, an index or the TTL.

One table holds everything drsentry remembers (single-table design):

===================  ==============================  ==================================
item                 pk                              sk
===================  ==============================  ==================================
backup record        ``target#{target}``             ``backup#{backup_id}``
verification         ``target#{target}``             ``verify#{verified_at}#{id}``
replication check    ``target#{target}``             ``replication#{checked_at}#{run_id}``
run lock             ``lock#{target}`` (backup),     ``lock``
                     ``lock#verify#{target}``
alert state          ``alert#{source}#{target}``     ``state``
idempotency record   ``idempotency#drsentry``        Powertools' hash of the request
===================  ==============================  ==================================

A target's backups, verifications and replication checks share its partition, and each
kind sorts by time within its sort-key prefix, so "newest first" and "since a moment" are
one key-range query. Backup ids begin with their start time (``core.records.new_backup_id``),
which is what makes a window of backups a key range too. The ``backup_id-index`` GSI finds
a backup by id alone (``drsentry restore ID``); verification items carry ``backup_id``
as well, so the index sees them and readers filter on ``kind``. ``expires_at`` (epoch
seconds) is the table's TTL attribute.

Every item written today is read back by these keys: changing one means migrating the
catalogs that exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

PK: Final = "pk"
SK: Final = "sk"
KIND: Final = "kind"
BACKUP_ID: Final = "backup_id"
BACKUP_ID_INDEX: Final = "backup_id-index"
TTL_ATTRIBUTE: Final = "expires_at"

# What an item is (its `kind` attribute).
BACKUP_KIND: Final = "backup"
VERIFICATION_KIND: Final = "verification"
REPLICATION_KIND: Final = "replication"
ALERT_STATE_KIND: Final = "alert-state"

# Powertools Idempotency keeps its records in one partition of the table.
IDEMPOTENCY_PK: Final = "idempotency#drsentry"

BACKUP_SK_PREFIX: Final = "backup#"
VERIFICATION_SK_PREFIX: Final = "verify#"
REPLICATION_SK_PREFIX: Final = "replication#"
LOCK_SK: Final = "lock"
ALERT_STATE_SK: Final = "state"
# '~' sorts after every character of an ISO timestamp and of a backup id: it closes a range.
_RANGE_END: Final = "~"

LockedJob = Literal["backup", "verify"]
Key = dict[str, dict[str, str]]


def key(pk: str, sk: str) -> Key:
    """The primary key of one item, in DynamoDB's attribute-value form."""
    return {PK: {"S": pk}, SK: {"S": sk}}


def target_pk(target: str) -> str:
    """The partition of a target's backups, verifications and replication checks."""
    return f"target#{target}"


def backup_sk(backup_id: str) -> str:
    return f"{BACKUP_SK_PREFIX}{backup_id}"


def backups_started_from(moment: datetime) -> tuple[str, str]:
    """The sort-key range of the backups started at or after `moment` (to the second)."""
    return f"{BACKUP_SK_PREFIX}{moment.astimezone(UTC):%Y%m%dT%H%M%S}", f"{BACKUP_SK_PREFIX}{_RANGE_END}"


def verification_sk(verified_at: str, verification_id: str) -> str:
    return f"{VERIFICATION_SK_PREFIX}{verified_at}#{verification_id}"


def verifications_since(since: str) -> tuple[str, str]:
    """The sort-key range of the verifications at or after `since` (ISO 8601)."""
    return f"{VERIFICATION_SK_PREFIX}{since}", f"{VERIFICATION_SK_PREFIX}{_RANGE_END}"


def replication_check_sk(checked_at: str, run_id: str) -> str:
    return f"{REPLICATION_SK_PREFIX}{checked_at}#{run_id}"


def lock_pk(target: str, job: LockedJob = "backup") -> str:
    """One lock per target and job. The backup lock's key has no job name: it came first."""
    return f"lock#{target}" if job == "backup" else f"lock#{job}#{target}"


def alert_state_pk(source: str, target: str) -> str:
    return f"alert#{source}#{target}"

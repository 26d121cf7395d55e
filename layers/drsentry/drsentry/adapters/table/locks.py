"""Run locks: at most one backup (and one verification) of a target at a time.

A lock is one item written with a condition: it may be taken when absent or expired, so
a crashed run's lock lets the next run in once its TTL has passed, without waiting for
DynamoDB's TTL sweep (which can take days). Only its owner releases it.
"""

from __future__ import annotations

import time

from drsentry.adapters.aws_errors import AWS_ERRORS, error_code
from drsentry.adapters.table.items import Table, from_item, to_item
from drsentry.adapters.table.keys import LOCK_SK, PK, SK, TTL_ATTRIBUTE, LockedJob, key, lock_pk
from drsentry.core.errors import RunInProgress

_HELD = "ConditionalCheckFailedException"


class RunLocks:
    def __init__(self, table: Table) -> None:
        self.table = table

    def acquire(self, target: str, owner: str, ttl_seconds: int, job: LockedJob = "backup") -> None:
        """Take the target's lock for `job`; RunInProgress when another live run holds it."""
        now = int(time.time())
        item = {PK: lock_pk(target, job), SK: LOCK_SK, "owner": owner, TTL_ATTRIBUTE: now + ttl_seconds}
        try:
            self.table.client.put_item(
                TableName=self.table.name,
                Item=to_item(item),
                ConditionExpression=f"attribute_not_exists({PK}) OR #expires < :now",
                ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except AWS_ERRORS as exc:
            if error_code(exc) == _HELD:
                raise RunInProgress.lock_held(job, target) from exc
            raise self.table.error(f"taking the {_lock_name(job)} of {target}", exc) from exc

    def held(self, target: str, job: LockedJob = "backup") -> bool:
        """Whether a live run of `job` holds the target's lock now (an expired lock is not held)."""
        try:
            response = self.table.client.get_item(
                TableName=self.table.name, Key=key(lock_pk(target, job), LOCK_SK), ConsistentRead=True
            )
        except AWS_ERRORS as exc:
            raise self.table.error(f"reading the {_lock_name(job)} of {target}", exc) from exc
        item = response.get("Item")
        return item is not None and int(from_item(item).get(TTL_ATTRIBUTE, 0)) >= int(time.time())

    def release(self, target: str, owner: str, job: LockedJob = "backup") -> None:
        """Give the lock back; one that expired and was taken by another run is left to it."""
        try:
            self.table.client.delete_item(
                TableName=self.table.name,
                Key=key(lock_pk(target, job), LOCK_SK),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except AWS_ERRORS as exc:
            if error_code(exc) != _HELD:
                raise self.table.error(f"releasing the {_lock_name(job)} of {target}", exc) from exc


def _lock_name(job: LockedJob) -> str:
    return "lock" if job == "backup" else f"{job} lock"

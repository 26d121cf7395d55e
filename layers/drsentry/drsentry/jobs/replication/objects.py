"""What the copy and the check learn of an object in a bucket: its HEAD with the tags of
the version HEADed, and its SHA-256 read from the bytes when the tag cannot be trusted."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from drsentry.adapters.buckets import Bucket, ObjectHead
from drsentry.jobs.replication.rules import ObjectFacts, needs_reading, object_facts


def facts_of(bucket: Bucket, key: str, head: ObjectHead | None) -> ObjectFacts:
    """The facts of a HEADed object, with the tags of the version HEADed."""
    if head is None:
        return object_facts(None)
    return object_facts(head, bucket.tags(key, head.version_id))


def read_sha256(bucket: Bucket, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in bucket.iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def establish_sha256(
    bucket: Bucket,
    key: str,
    replica: ObjectFacts,
    *,
    expected_size: int | None,
    changed: bool,
) -> ObjectFacts:
    if not needs_reading(replica, expected_size, changed):
        return replica
    return replace(replica, sha256=read_sha256(bucket, key), sha256_read=True)


def small_object_facts(bucket: Bucket, key: str, head: ObjectHead | None) -> ObjectFacts:
    """The facts of a small object (the roles object), its SHA-256 read when it has no tag:
    a few kilobytes cost less to read than a doubt."""
    facts = facts_of(bucket, key, head)
    if not facts.exists or facts.sha256:
        return facts
    return replace(facts, sha256=read_sha256(bucket, key), sha256_read=True)

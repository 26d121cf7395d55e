"""Destroying a locked backup object on purpose, as only someone allowed to bypass governance
retention could (no role of the stack may): how the fault tests make a backup lose an object."""

from __future__ import annotations

from typing import Any


def destroy_every_version(s3: Any, bucket: str, key: str) -> None:
    for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        if version["Key"] == key:
            s3.delete_object(
                Bucket=bucket, Key=key, VersionId=version["VersionId"], BypassGovernanceRetention=True
            )

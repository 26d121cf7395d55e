"""`drsentry check`: is this deployment ready for a disaster? The seeds' checklist made real.

One line per check, each `pass`, `warn` or `fail`, in the order an operator would fix
things: configuration, credentials, PostgreSQL tools, connectivity and tool versions per
target, buckets (versioning, the replica in another region, Object Lock on the archive,
the application buckets each backup manifests), the catalog table and the topic, then
what the catalog says: the newest backup against the RPO and the newest verification.
Every check runs even when an earlier one failed (a missing bucket says nothing about the
database), and a check that cannot read what it needs fails with the reason instead of
stopping the others.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import psycopg
from pydantic import BaseModel

from drsentry.adapters.aws_errors import AWS_ERRORS, describe
from drsentry.adapters.pgmeta import server_version
from drsentry.adapters.pgtools import PgTool, find_tool, major_version
from drsentry.adapters.secrets import Credentials, conninfo_to_dict, redact, sanitize
from drsentry.adapters.sns import Topic
from drsentry.adapters.table.keys import BACKUP_ID_INDEX, TTL_ATTRIBUTE
from drsentry.adapters.throwaway_server import find_server_binaries
from drsentry.adapters.tls import choose_tls, is_local_host
from drsentry.core.config import TargetConfig, format_duration
from drsentry.core.errors import BucketNotFound, DrsentryError
from drsentry.jobs.replication.rules import region_problems, versioning_problem
from drsentry.jobs.runtime import Runtime

CONNECT_TIMEOUT_SECONDS = 10
# Amber, as in `drsentry status`: the next missed backup breaks the RPO.
RPO_WARNING_SHARE = 0.8

CheckState = Literal["pass", "warn", "fail"]


class ReadinessCheck(BaseModel):
    name: str
    status: CheckState
    detail: str
    target: str | None = None


class ReadinessReport(BaseModel):
    ready: bool
    passed: int
    warnings: int
    failed: int
    checks: list[ReadinessCheck]


# What a check may fail with: its reason becomes the check's line, the other checks still run.
CHECK_ERRORS = (DrsentryError, psycopg.Error, OSError, *AWS_ERRORS)


def throwaway_binaries(pg_bin_dir: str | None) -> tuple[CheckState, str]:
    """A target without a scratch server: the server binaries verify would start."""
    binaries = find_server_binaries(pg_bin_dir)
    return (
        "pass",
        f"no scratch server named: verify starts a throwaway PostgreSQL {binaries.version} "
        f"({binaries.postgres.origin}: {binaries.postgres.path})",
    )


class _Checklist:
    def __init__(self) -> None:
        self.checks: list[ReadinessCheck] = []

    def add(self, name: str, status: CheckState, detail: str, target: str | None = None) -> None:
        self.checks.append(ReadinessCheck(name=name, status=status, detail=detail, target=target))

    def run(self, name: str, check: Callable[[], tuple[CheckState, str]], target: str | None = None) -> None:
        """One check; what it could not read is its failure, never the end of the list."""
        try:
            status, detail = check()
        except CHECK_ERRORS as exc:
            status, detail = "fail", describe(exc)
        self.add(name, status, detail, target)


def tls_check(credentials: Credentials, target: TargetConfig) -> tuple[CheckState, str]:
    """Does the source's TLS check the server? A warning for anything weaker than verify-ca."""
    written = credentials.raw_dsn(dsn=target.dsn, secret_name=target.dsn_secret)
    parts = conninfo_to_dict(written)
    choice = choose_tls(parts, sslmode=target.sslmode, sslrootcert=target.sslrootcert)
    where = redact(written)
    if is_local_host(parts.get("host") or parts.get("hostaddr")):
        return "pass", f"source {where} is on this machine: TLS not needed"
    if not choice.verifies_server:
        said_by = "drsentry.yaml" if choice.decided_by == "configuration" else "the DSN or its secret"
        risk = (
            "encrypts but does not check the server's certificate"
            if choice.sslmode == "require"
            else "may connect without TLS at all"
        )
        return "warn", f"source {where}: sslmode={choice.sslmode} ({said_by}) {risk}; use verify-full"
    ca = choice.sslrootcert or "~/.postgresql/root.crt (libpq's default; no CA bundle found)"
    return "pass", f"source {where}: sslmode={choice.sslmode}, CA {ca}"


class ReadinessRun:
    def __init__(self, runtime: Runtime, config_source: str, target: str | None = None) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.config_source = config_source
        self.targets = runtime.config.selected_targets(target)
        self.list = _Checklist()
        self.tools: dict[str, PgTool] = {}

    def execute(self) -> ReadinessReport:
        config = self.config
        self.list.add(
            "config",
            "pass",
            f"{self.config_source}: valid; {len(config.targets)} target(s), "
            f"RPO {format_duration(config.rpo)}, RTO {format_duration(config.rto)}",
        )
        self._credentials()
        self._pg_tools()
        for target in self.targets:
            self._databases(target)
        self._buckets()
        self.list.run("catalog table", self._catalog_table)
        self.list.run("topic", self._topic)
        for target in self.targets:
            self.list.run("newest backup", partial(self._newest_backup, target), target.name)
            self.list.run("newest verification", partial(self._newest_verification, target), target.name)
        checks = self.list.checks
        failed = sum(check.status == "fail" for check in checks)
        return ReadinessReport(
            ready=failed == 0,
            passed=sum(check.status == "pass" for check in checks),
            warnings=sum(check.status == "warn" for check in checks),
            failed=failed,
            checks=checks,
        )

    # credentials -------------------------------------------------------------------

    def _dsn_check(self, dsn: str | None, secret: str | None, role: str) -> tuple[CheckState, str]:
        if secret:
            self.runtime.credentials.dsn(dsn=None, secret_name=secret)
            return "pass", f"{role}: secret {secret} readable"
        return "warn", f"{role}: DSN written in the configuration (fine locally; use a secret in AWS)"

    def _credentials(self) -> None:
        for target in self.targets:
            self.list.run(
                "credentials",
                partial(self._dsn_check, target.dsn, target.dsn_secret, "source database"),
                target.name,
            )
            if target.verify is not None and target.verify.standing_scratch:
                verify = target.verify
                self.list.run(
                    "credentials",
                    partial(self._dsn_check, verify.scratch_dsn, verify.scratch_dsn_secret, "scratch server"),
                    target.name,
                )
        self.list.run("credentials", self._slack_credentials)

    def _slack_credentials(self) -> tuple[CheckState, str]:
        notifications = self.config.notifications
        if notifications.slack_webhook_secret:
            self.runtime.credentials.secret_text(notifications.slack_webhook_secret)
            return "pass", f"Slack webhook: secret {notifications.slack_webhook_secret} readable"
        if notifications.slack_webhook_url:
            return (
                "warn",
                "Slack webhook URL written in the configuration (fine locally; use a secret in AWS)",
            )
        return "warn", "no Slack webhook configured: alerts go to SNS only"

    # PostgreSQL ---------------------------------------------------------------------

    def _pg_tools(self) -> None:
        for name in ("pg_dump", "pg_restore"):
            try:
                tool = find_tool(name, self.config.pg_bin_dir)
            except DrsentryError as exc:
                self.list.add("pg tools", "fail", str(exc))
                continue
            self.tools[name] = tool
            self.list.add("pg tools", "pass", f"{name} {tool.version} ({tool.origin}: {tool.path})")

    def _databases(self, target: TargetConfig) -> None:
        versions: dict[str, str] = {}

        def source() -> tuple[CheckState, str]:
            dsn = self.runtime.credentials.target_dsn(target)
            versions["source"] = self._server_version(dsn)
            return "pass", f"source {redact(dsn)} answers: PostgreSQL {versions['source']}"

        self.list.run("connectivity", source, target.name)
        self.list.run("tls", partial(tls_check, self.runtime.credentials, target), target.name)
        if target.verify is not None and not target.verify.standing_scratch:
            self.list.run("connectivity", partial(throwaway_binaries, self.config.pg_bin_dir), target.name)
        elif target.verify is not None:
            verify = target.verify

            def scratch() -> tuple[CheckState, str]:
                dsn = self.runtime.credentials.dsn(
                    dsn=verify.scratch_dsn, secret_name=verify.scratch_dsn_secret
                )
                versions["scratch"] = self._server_version(dsn)
                return "pass", f"scratch server {redact(dsn)} answers: PostgreSQL {versions['scratch']}"

            self.list.run("connectivity", scratch, target.name)
        else:
            self.list.add(
                "connectivity",
                "warn",
                "no verify section: this target's backups are never restored",
                target.name,
            )
        for tool_name, server in (("pg_dump", "source"), ("pg_restore", "source"), ("pg_restore", "scratch")):
            tool = self.tools.get(tool_name)
            version = versions.get(server)
            if tool is None or version is None:
                continue  # already reported: the tool or the server is missing
            if tool.major < major_version(version):
                self.list.add(
                    "pg tool versions",
                    "fail",
                    f"{tool_name} {tool.version} is older than the {server} server's PostgreSQL {version}; "
                    f"install {tool_name} {major_version(version)} or newer",
                    target.name,
                )
            else:
                self.list.add(
                    "pg tool versions",
                    "pass",
                    f"{tool_name} {tool.version} >= {server} server {version}",
                    target.name,
                )

    def _server_version(self, dsn: str) -> str:
        try:
            with psycopg.connect(
                dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="drsentry-check"
            ) as conn:
                return server_version(conn)
        except psycopg.Error as exc:
            raise DrsentryError(f"cannot connect to {redact(dsn)}: {sanitize(describe(exc), dsn)}") from exc

    # AWS ------------------------------------------------------------------------------

    def _bucket_check(self, role: str, bucket: str, region: str) -> Callable[[], tuple[CheckState, str]]:
        replica = self.config.storage.replica
        mode = replica.mode if replica else "copy"

        def check() -> tuple[CheckState, str]:
            facts = self.runtime.buckets.bucket(bucket, region)
            try:
                location, versioning = facts.location(), facts.versioning()
            except BucketNotFound:
                return "fail", f"the {role} bucket {bucket} does not exist"
            if location != region:
                return "fail", f"the {role} bucket {bucket} is in {location}, the configuration says {region}"
            problem = versioning_problem(role, bucket, versioning, mode)
            if problem is not None:
                return ("fail" if problem.severity == "critical" else "warn"), problem.detail
            return "pass", f"s3://{bucket} ({location}): exists, versioning enabled"

        return check

    def _buckets(self) -> None:
        storage = self.config.storage
        self.list.run("primary bucket", self._bucket_check("primary", storage.bucket, storage.region))
        replica = storage.replica
        if replica is None:
            self.list.add("replica", "warn", "no storage.replica: one regional outage takes every backup")
        else:
            self.list.run("replica bucket", self._bucket_check("replica", replica.bucket, replica.region))
            self.list.run("replica region", self._replica_region)
        archive = storage.archive
        if archive is None:
            self.list.add(
                "archive bucket", "warn", "no storage.archive: monthly backups are not kept long term"
            )
        else:
            self.list.run("archive bucket", self._bucket_check("archive", archive.bucket, storage.region))
            self.list.run("archive object lock", self._object_lock)
        for target in self.targets:
            for entry in target.storage:
                self.list.run(
                    "application bucket",
                    partial(self._application_bucket, entry.bucket, entry.region),
                    target.name,
                )

    def _application_bucket(self, bucket: str, region: str) -> tuple[CheckState, str]:
        """A bucket of the application's files (targets[].storage): manifested with every backup."""
        facts = self.runtime.buckets.bucket(bucket, region)
        try:
            location, versioning = facts.location(), facts.versioning()
        except BucketNotFound:
            return "fail", (
                f"the application bucket {bucket} does not exist (a typo in targets[].storage?): "
                "no backup can record its files"
            )
        if location != region:
            return "fail", (
                f"the application bucket {bucket} is in {location}, the configuration says {region}"
            )
        if versioning != "Enabled":
            return "warn", (
                f"versioning of the application bucket {bucket} is {versioning or 'not enabled'}: "
                "a deleted or overwritten object cannot be recovered"
            )
        return "pass", f"s3://{bucket} ({location}): exists, versioning enabled"

    def _replica_region(self) -> tuple[CheckState, str]:
        storage = self.config.storage
        replica = storage.replica
        assert replica is not None
        primary_location: str | None
        replica_location: str | None
        try:
            primary_location = self.runtime.buckets.bucket(storage.bucket, storage.region).location()
            replica_location = self.runtime.buckets.bucket(replica.bucket, replica.region).location()
        except BucketNotFound:
            # The missing bucket is its own failed line; the configuration can still be judged.
            primary_location = replica_location = None
        problems = region_problems(storage.region, replica.region, primary_location, replica_location)
        if problems:
            return "fail", "; ".join(problem.detail for problem in problems)
        return "pass", f"replica in {replica.region}, primary in {storage.region} ({replica.mode} mode)"

    def _object_lock(self) -> tuple[CheckState, str]:
        archive = self.config.storage.archive
        assert archive is not None
        archive_bucket = self.runtime.buckets.bucket(archive.bucket, self.config.storage.region)
        try:
            enabled = archive_bucket.object_lock_enabled()
        except BucketNotFound:
            return "fail", f"the archive bucket {archive.bucket} does not exist"
        if not archive.lock_days:
            return "warn", "lock_days is 0: archived backups can be deleted before their time"
        if not enabled:
            return "fail", (
                f"Object Lock is not enabled on {archive.bucket}: archive copies cannot be locked for "
                f"{archive.lock_days} days (it can only be enabled when the bucket is created)"
            )
        return (
            "pass",
            f"Object Lock enabled; archive copies locked {archive.lock_days} days ({archive.lock_mode})",
        )

    def _catalog_table(self) -> tuple[CheckState, str]:
        name = self.config.catalog.table
        table = self.runtime.catalog.describe()
        if table is None:
            return "fail", f"the catalog table {name} does not exist"
        if not table.has_backup_id_index:
            return "fail", f"table {name} lacks the {BACKUP_ID_INDEX} index that `drsentry restore ID` needs"
        if not table.ttl_on:
            return "warn", f"table {name}: TTL is off, so verification records are never expired"
        if not table.ttl_on_expiry_attribute:
            return "warn", (
                f"table {name}: TTL is on {table.ttl_attribute}, not {TTL_ATTRIBUTE}, "
                "so verification records are never expired"
            )
        return "pass", f"table {name}: {table.status}, {BACKUP_ID_INDEX} present, TTL on"

    def _topic(self) -> tuple[CheckState, str]:
        arn = self.config.notifications.sns_topic_arn
        if not arn:
            return "warn", "no notifications.sns_topic_arn: nobody is alerted"
        if not Topic(self.runtime.clients.sns, arn).exists():
            return "fail", f"the SNS topic {arn} does not exist"
        return "pass", f"SNS topic {arn} exists"

    # what the catalog says --------------------------------------------------------------

    def _newest_backup(self, target: TargetConfig) -> tuple[CheckState, str]:
        newest = self.runtime.catalog.latest_completed(target.name)
        rpo = self.config.rpo.total_seconds()
        if newest is None:
            return "fail", "no completed backup: run `drsentry run backup`"
        age = (self.runtime.clock() - newest.started).total_seconds()
        text = f"{newest.backup_id} is {_age(age)} old, RPO {format_duration(self.config.rpo)}"
        if age > rpo:
            return "fail", text
        return ("warn" if age > rpo * RPO_WARNING_SHARE else "pass"), text

    def _newest_verification(self, target: TargetConfig) -> tuple[CheckState, str]:
        if target.verify is None:
            return "warn", "no verify section: no backup of this target is ever restored"
        newest = self.runtime.catalog.verifications.latest(target.name)
        if newest is None:
            return "warn", "never verified: run `drsentry run verify`"
        text = f"{newest.backup_id} verified {newest.verified_at}: {newest.status}"
        failing = ", ".join(check.name for check in newest.failed_checks)
        if failing:
            text += f" (failed: {failing})"
        states: dict[str, CheckState] = {"success": "pass", "warning": "warn", "failure": "fail"}
        return states[newest.status], text


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def readiness(runtime: Runtime, config_source: str, target: str | None = None) -> ReadinessReport:
    """Every readiness check of the deployment (or of one target's part of it)."""
    return ReadinessRun(runtime, config_source, target).execute()

"""The validated `drsentry.yaml` model, loaded once per run.

Every problem is reported as one line naming the field, e.g.
``drsentry.yaml: targets[0].verify.min_size: invalid size '10XB' (write e.g. 10MB)``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from drsentry.core.errors import ConfigError, UnknownTarget
from drsentry.core.schedules import Job, ScheduleExpression, SchedulesConfig

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
TARGET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_duration(value: Any) -> timedelta:
    """`90m`, `36h`, `30d` (also `s` and `w`) to a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION_RE.match(str(value)) if isinstance(value, str | int) else None
    if match is None:
        raise ValueError(f"invalid duration {value!r} (write e.g. 90m, 36h, 30d)")
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_size(value: Any) -> int:
    """`10MB`, `1.5GB`, `512kB` (PostgreSQL's units: 1 MB = 1024 kB) to bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid size {value!r} (write e.g. 10MB)")
    unit = match.group(2).lower()
    multiplier_letter = unit[:1] if unit[:1] in "kmgt" else ""
    if not multiplier_letter and "i" in unit:
        raise ValueError(f"invalid size {value!r} (write e.g. 10MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[multiplier_letter])


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaConfig(_Strict):
    bucket: str
    region: str
    mode: Literal["copy", "crr"] = "copy"
    max_lag: Duration = timedelta(minutes=15)


class ArchiveConfig(_Strict):
    bucket: str
    storage_class: Literal["DEEP_ARCHIVE", "GLACIER", "GLACIER_IR"] = "DEEP_ARCHIVE"
    lock_days: int = Field(default=2555, ge=0)
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"


class StorageConfig(_Strict):
    bucket: str
    region: str
    prefix: str = "backups/"
    kms_key: str | None = None
    replica: ReplicaConfig | None = None
    archive: ArchiveConfig | None = None
    # Object Lock mode of every backup in the primary bucket (and the replica): GOVERNANCE lets an
    # operator holding s3:BypassGovernanceRetention remove a mistake; COMPLIANCE lets nobody.
    lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    # zstd level 1: on pg_dump's uncompressed custom format it stores less than level 3
    # (219 vs 225 MB on the benchmark database) for about 1.5 CPU-seconds less per GB.
    compression_level: int = Field(default=1, ge=1, le=19)

    @field_validator("prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, prefix: str) -> str:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} must end with '/'")
        return prefix


class RetentionConfig(_Strict):
    hourly: Duration = timedelta(days=7)
    daily: Duration = timedelta(days=30)
    weekly: Duration = timedelta(days=365)
    monthly: Duration = timedelta(days=2555)


class CatalogConfig(_Strict):
    table: str = "drsentry-catalog"


class NotificationsConfig(_Strict):
    sns_topic_arn: str | None = None
    slack_webhook_secret: str | None = None
    slack_webhook_url: str | None = None
    repeat_after: Duration = timedelta(hours=6)

    @model_validator(mode="after")
    def _one_slack_source(self) -> NotificationsConfig:
        if self.slack_webhook_secret and self.slack_webhook_url:
            raise ValueError("set slack_webhook_secret or slack_webhook_url, not both")
        return self


class Assertion(_Strict):
    name: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    severity: Literal["critical", "warning"] = "critical"
    # A target of several databases: the one it runs in (unset: the first of the backup).
    database: str | None = None


class VerifyConfig(_Strict):
    scratch_dsn_secret: str | None = None
    scratch_dsn: str | None = None
    critical_tables: list[str] = Field(default_factory=list)
    functions: list[str] = Field(default_factory=list)
    rls_tables: list[str] = Field(default_factory=list)
    min_size: Size = 0
    row_count_tolerance: float = Field(default=0.10, ge=0)
    assertions: list[Assertion] = Field(default_factory=list)
    sample_older: int = Field(default=0, ge=0)
    # A storage manifest with this much fewer objects or bytes than the previous one fails
    # verification: a mass deletion (or ransomware) signal, not everyday churn.
    storage_drop_tolerance: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _one_scratch_source(self) -> VerifyConfig:
        # Neither: verify starts a blank throwaway server per run (the default).
        if self.scratch_dsn_secret and self.scratch_dsn:
            raise ValueError("set at most one of scratch_dsn_secret or scratch_dsn")
        return self

    @property
    def standing_scratch(self) -> bool:
        """A scratch server is named; otherwise each verification starts its own throwaway server."""
        return bool(self.scratch_dsn_secret or self.scratch_dsn)


_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
HTTP_STATUS_RANGE = range(100, 600)


class BucketConfig(_Strict):
    """An application bucket (uploads, invoices, photos) whose objects drsentry manifests."""

    bucket: str
    region: str
    # Only keys under this prefix are listed; "" is the whole bucket.
    prefix: str = ""

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, bucket: str) -> str:
        # The name becomes part of the manifest's key: only what S3 itself allows.
        if not _BUCKET_NAME_RE.match(bucket):
            raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name")
        return bucket


class SmokeCheck(_Strict):
    """A check run after a restore: an HTTP request, or one SQL statement on the restored database."""

    name: str = Field(min_length=1)
    url: str | None = None
    sql: str | None = None
    # Unset means 200 (kept None so that a dumped SQL check does not grow an expect_status).
    expect_status: int | list[int] | None = None
    max_seconds: float = Field(default=2.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        # urllib would also open file:// and ftp:// URLs: a smoke check reaches the application only.
        if url is None:
            return None
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("url must start with http:// or https:// and name a host")
        # Reports and logs show the URL: a password in it would end up in every drill report.
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("url must not hold credentials (user:password@host); smoke checks are anonymous")
        return url

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, expect: int | list[int] | None) -> int | list[int] | None:
        if expect is None:
            return None
        statuses = expect if isinstance(expect, list) else [expect]
        if not statuses:
            raise ValueError("expect_status must name at least one HTTP status")
        wrong = [status for status in statuses if status not in HTTP_STATUS_RANGE]
        if wrong:
            raise ValueError(f"expect_status {wrong[0]} is not an HTTP status (100-599)")
        return expect

    @model_validator(mode="after")
    def _url_or_sql(self) -> SmokeCheck:
        if bool(self.url) == bool(self.sql):
            raise ValueError(f"smoke check {self.name!r}: set exactly one of url or sql")
        if self.sql and self.expect_status is not None:
            raise ValueError(f"smoke check {self.name!r}: expect_status applies to url checks only")
        return self

    @property
    def kind(self) -> Literal["http", "sql"]:
        return "http" if self.url else "sql"

    @property
    def expected_statuses(self) -> list[int]:
        if self.expect_status is None:
            return [200]
        return list(self.expect_status) if isinstance(self.expect_status, list) else [self.expect_status]


# PostgreSQL truncates longer names: a configured name must be one the server can have.
DATABASE_NAME_MAX_BYTES = 63


def check_databases(value: Any) -> Any:
    """`databases`: a non-empty list of distinct database names, or `all`."""
    if value is None or value == "all":
        return value
    if isinstance(value, str):
        raise ValueError(f"expected a list of database names or 'all', got {value!r}")
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of database names or 'all'")
    for name in value:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"{name!r} is not a database name")
        if len(name.encode()) > DATABASE_NAME_MAX_BYTES:
            raise ValueError(f"database name {name!r} is longer than {DATABASE_NAME_MAX_BYTES} bytes")
    repeated = sorted({name for name in value if value.count(name) > 1})
    if repeated:
        raise ValueError(f"database {repeated[0]!r} is listed twice")
    return value


class TargetConfig(_Strict):
    name: str
    dsn_secret: str | None = None
    dsn: str | None = None
    # Several databases of the DSN's server, or `all` it may connect to (None: the DSN's database).
    databases: Annotated[list[str] | Literal["all"] | None, BeforeValidator(check_databases)] = None
    # Unset: the stack's (`schedules:`). Each becomes one EventBridge Scheduler schedule.
    schedule: ScheduleExpression | None = None
    verify_schedule: ScheduleExpression | None = None
    archive_schedule: ScheduleExpression | None = None
    replication_check_schedule: ScheduleExpression | None = None
    # TLS for connections whose DSN or secret names no sslmode (README, "TLS to the database"):
    # unset means verify-full with the RDS CA bundle; `require` encrypts without checking the
    # server, so it is allowed only written here, and `drsentry check` warns about it.
    sslmode: Literal["verify-full", "verify-ca", "require"] | None = None
    sslrootcert: str | None = None
    verify: VerifyConfig | None = None
    storage: list[BucketConfig] = Field(default_factory=list)
    smoke: list[SmokeCheck] = Field(default_factory=list)
    # Where backup and verify run: Lambda, an ECS Fargate task, or `auto` (Lambda until the
    # previous run or dump says Lambda's 15 minutes are getting tight; jobs/fargate/rules.py).
    runner: Literal["lambda", "fargate", "auto"] = "auto"

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, name: str) -> str:
        # The name becomes part of S3 keys, DynamoDB keys and metric dimensions.
        if not TARGET_NAME_RE.match(name):
            raise ValueError(f"name {name!r} must be lower-case letters, digits, '-' or '_' (at most 63)")
        return name

    @model_validator(mode="after")
    def _check(self) -> TargetConfig:
        if bool(self.dsn_secret) == bool(self.dsn):
            raise ValueError("set exactly one of dsn_secret or dsn")
        for assertion in self.verify.assertions if self.verify else []:
            if assertion.database is None:
                continue
            if self.databases is None:
                raise ValueError(
                    f"assertion {assertion.name!r}: database applies only to a target with databases"
                )
            if self.databases != "all" and assertion.database not in self.databases:
                raise ValueError(
                    f"assertion {assertion.name!r}: database {assertion.database!r} is not in databases"
                )
        # One manifest per bucket and backup, named after the bucket: a bucket is listed once.
        buckets = [entry.bucket for entry in self.storage]
        repeated = sorted({bucket for bucket in buckets if buckets.count(bucket) > 1})
        if repeated:
            raise ValueError(
                f"storage bucket {repeated[0]!r} is listed twice (list it once, with one prefix)"
            )
        names = [check.name for check in self.smoke]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate smoke check names: {', '.join(duplicates)}")
        return self


class Config(_Strict):
    rpo: Duration = timedelta(hours=1)
    rto: Duration = timedelta(minutes=15)
    storage: StorageConfig
    retention: RetentionConfig = RetentionConfig()
    catalog: CatalogConfig = CatalogConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    pg_bin_dir: str | None = None
    schedules: SchedulesConfig = SchedulesConfig()
    targets: list[TargetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_targets(self) -> Config:
        names = [target.name for target in self.targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
        for number, target in enumerate(self.targets):
            for index, entry in enumerate(target.storage):
                # Listing the backup bucket would manifest drsentry's own manifests, growing each time.
                if entry.bucket == self.storage.bucket:
                    raise ValueError(
                        f"targets[{number}].storage[{index}].bucket: {entry.bucket!r} is drsentry's own "
                        "backup bucket; list application buckets there"
                    )
        return self

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(target.name for target in self.targets)
        raise UnknownTarget(f"unknown target {name!r} (configured: {known})")

    def selected_targets(self, name: str | None) -> list[TargetConfig]:
        return [self.target(name)] if name else list(self.targets)

    def schedule_of(self, target: TargetConfig, job: Job) -> str:
        """The target's own expression for `job`, or the stack's."""
        own = target.schedule if job == "backup" else getattr(target, f"{job.replace('-', '_')}_schedule")
        return str(own) if own else self.schedules.default_for(job)


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def format_validation_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    where = _location(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where}: {message}{suffix}" if where else f"{source}: {message}{suffix}"


def parse_config(text: str, source: str = "drsentry.yaml") -> Config:
    """Validate YAML text; raise ConfigError with one line naming the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_config(path: str | Path) -> Config:
    config_path = Path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {config_path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from exc
    return parse_config(text, source=str(config_path))


def dump_config(config: Config) -> str:
    """YAML text that `parse_config` reads back to an equal Config."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)

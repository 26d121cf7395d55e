"""Logger, Tracer and Metrics, created once, and the one list of metric names.

The SAM template's alarms are checked against ``METRIC_NAMES`` by a test, so an alarm
can never watch a metric the code does not emit.
"""

from __future__ import annotations

import sys

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = "drsentry"
NAMESPACE = "drsentry"
TARGET_DIMENSION = "Target"

# backup
BACKUP_SUCCESS = "BackupSuccess"
BACKUP_FAILURE = "BackupFailure"
BACKUP_DURATION_SECONDS = "BackupDurationSeconds"
BACKUP_SIZE_BYTES = "BackupSizeBytes"
BACKUP_THROUGHPUT_MBPS = "BackupThroughputMBps"
# 0 after a completed backup; after a failed one, the age of the newest completed backup.
BACKUP_AGE_SECONDS = "BackupAgeSeconds"
# verify
VERIFICATION_SUCCESS = "VerificationSuccess"
VERIFICATION_WARNING = "VerificationWarning"
VERIFICATION_FAILURE = "VerificationFailure"
RESTORE_SECONDS = "RestoreSeconds"
# Age of the newest backup that verified (the config's `rpo` is about this one).
VERIFIED_BACKUP_AGE_SECONDS = "VerifiedBackupAgeSeconds"
# replication
REPLICA_MISSING = "ReplicaMissing"
REPLICA_MISMATCH = "ReplicaMismatch"
REPLICATION_LAG_SECONDS = "ReplicationLagSeconds"
# archive
ARCHIVE_FAILURE = "ArchiveFailure"
ARCHIVED_BACKUPS = "ArchivedBackups"
EXPIRED_BACKUPS = "ExpiredBackups"
# notifications
NOTIFICATION_FAILED = "NotificationFailed"

METRIC_NAMES: frozenset[str] = frozenset(
    {
        BACKUP_SUCCESS,
        BACKUP_FAILURE,
        BACKUP_DURATION_SECONDS,
        BACKUP_SIZE_BYTES,
        BACKUP_THROUGHPUT_MBPS,
        BACKUP_AGE_SECONDS,
        VERIFICATION_SUCCESS,
        VERIFICATION_WARNING,
        VERIFICATION_FAILURE,
        RESTORE_SECONDS,
        VERIFIED_BACKUP_AGE_SECONDS,
        REPLICA_MISSING,
        REPLICA_MISMATCH,
        REPLICATION_LAG_SECONDS,
        ARCHIVE_FAILURE,
        ARCHIVED_BACKUPS,
        EXPIRED_BACKUPS,
        NOTIFICATION_FAILED,
    }
)

# Logs go to stderr so that `--json` output on stdout stays one clean document.
logger = Logger(service=SERVICE, stream=sys.stderr)
# X-Ray traces the AWS calls (botocore) and other HTTP (httplib: the Slack webhook). Left
# to itself it would import and patch every library it knows, psycopg included, costing
# the functions that never touch PostgreSQL 40 ms of each cold start.
TRACED_MODULES = ("botocore", "httplib")
tracer = Tracer(service=SERVICE, patch_modules=TRACED_MODULES)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def put_metric(name: str, unit: str, value: float, target: str) -> None:
    """One EMF metric with the `Target` dimension (flushed at once, so targets never mix)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"metric {name!r} is not in METRIC_NAMES")
    # single_metric ignores POWERTOOLS_METRICS_DISABLED; the CLI relies on it being honoured.
    if is_metrics_disabled():
        return
    with single_metric(name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(TARGET_DIMENSION, target)

"""Backup: `pg_dump` streamed through zstd and SHA-256 into an S3 multipart upload, one
target at a time; the record goes to the catalog, the manifest beside the dump, the
notice to SNS and Slack. A failed dump leaves no object and a `failed` record.

Which file holds what:

- ``job.py``: the entry points, `backup_target` (one target: back up, copy to the replica,
  manifest the storage buckets, notify) and `run_scheduled_backup` (every target of a
  scheduled event, through `jobs.runner`), and the run's result model.
- ``run.py``: `BackupRun`, one backup of one target: the lock, the dump, the record of
  its success or failure (catalog record, manifest, metrics).
- ``dump.py``: pg_dump of an exported snapshot streamed into the multipart upload, the
  facts read beside it, and the watchdog that stops it before the run's deadline (the
  design and its measured reasons are in its docstring).
- ``rules.py``: object keys, the manifest document, the notice, the metrics: pure.

The snapshot session is `drsentry.adapters.postgres.SnapshotSession`; the storage-bucket
manifests written after the backup are `drsentry.jobs.storage_manifest`.
"""

"""Cross-region replication: the copy after each backup, and the hourly check that proves
the second copy is really there.

Two modes (``storage.replica.mode``): in ``copy`` mode drsentry copies each completed
backup into the replica bucket itself; in ``crr`` mode S3 Cross-Region Replication copies
and drsentry only checks. A failed copy never fails the backup: it is recorded, and the
check reports it.

Where things are:

- ``job.py``: the entry the Lambda, the runner and the CLI call
  (``run_scheduled_replication_check``), and the newest check for ``drsentry status``.
- ``copy.py``: copy mode, ``replicate_backup``, which the backup calls after each backup.
- ``check.py``: ``check_replication``, the hourly check of one target: the window of
  backups, the listing of the replica bucket, the HEADs, the bucket settings; it records,
  measures and alerts.
- ``rules.py``: the pure rules, no I/O: how HEADs are judged (``judge_backup``), lag,
  fingerprints, the bucket-setting problems ``drsentry check`` reuses, the overall status.
- ``report.py``: the result of one check (``ReplicationReport``), the grouping of the
  judged backups into it, its notice and its metrics.
- ``objects.py``: what the copy and the check learn of a replica: HEAD, tags, SHA-256.
"""

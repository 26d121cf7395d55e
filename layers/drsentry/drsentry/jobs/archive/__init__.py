"""Archive: grandfather-father-son retention applied to the catalog and the buckets.

Once a day per target (the `archive` function, or `drsentry run archive`):

1. Plan with `gfs.plan_retention` (core/gfs.py) from the catalog and the verification log:
   every completed backup is kept, archived (it fills a monthly slot and has no archive copy
   yet; it is kept too) or expired (it fills no slot and nothing protects it).
2. Archive: a verified, locked copy in the archive bucket; the record says `archive` only
   when the copy matched the catalog and its lock was read back.
3. Extend: a backup the plan now gives a longer-lived slot than its primary copy is locked
   for gets the later Object Lock date (primary and replica); never shortened.
4. Expire: every copy deleted (archive, replica, primary), then the record `expired`; a
   monthly backup whose verified, locked archive copy serves its slot alone loses only its
   primary and replica copies (`expire_primary`). A backup still under Object Lock is left
   whole and reported `locked`; Object Lock is never bypassed, a refused delete is reported
   and retried next run.
5. Metrics, one run notice per target, and a summary in the result.

`--dry-run` plans and reports without writing anything. A second run right after the
first finds nothing to do: archived backups carry `archive`, expired ones hold no slot.

Where things are:
- job.py: the entry points, `archive_target` (one target: metrics, notice) and
  `run_scheduled_archive` (one scheduled event, through jobs/runner.py).
- run.py: `ArchiveRun`, the run of one target: plan, then apply each decision to its row.
- copy.py: the verified archive copy of one backup (copy, check size / class / SHA-256,
  lock that exact version, write the record's `archive` sub-document).
- expire.py: expiry of the archive, replica and primary copies, never forcing a lock.
- report.py: `DecisionRow`, `TargetArchiveReport` (the result) and its run notice.
- access.py: reading archived backups for recovery (`archive_readable`,
  `request_archive_restore`, `ensure_archive_readable`, `explain_unreadable`).
The `archive` sub-document itself is `ArchiveCopy` in core/records.py.
"""

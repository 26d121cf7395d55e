"""Verify: prove a backup restores, and restores to the data it claims to hold.

For each verified backup: create the roles the backup needs and the scratch server lacks from
the backup's roles object (the same path as a real recovery, jobs/roles.py), stream the object
from S3 through a SHA-256 and zstd into ``pg_restore`` on a fresh scratch database
(``drsentry_verify_<backup id>``) keeping owners and grants, run the checks against the
restored database, write a VerificationRecord, drop the scratch database (also when a check
fails or time runs out), emit metrics. Per target, the
newest completed backup is verified, plus ``verify.sample_older`` random older ones so
that old backups get read too; one notice per target goes to SNS and Slack.

Where things are:
- job.py      the entry points: verify_backup, verify_target, run_scheduled_verify
- run.py      VerificationRun: one backup from credentials to record
- scratch.py  the scratch database's life: leftovers, create, drop in every outcome
- interrupt.py  a verification stopped by SIGINT/SIGTERM: its one line and its record, carried up
- checks.py   the checks that read the restored database, and the storage manifests
- rules.py    the pure rules: check plan, judgements, scratch name and safety, CheckList
- report.py   the record, metrics, RPO signal, the notice, the run's result document
PostgreSQL is reached only through adapters/postgres.py (sessions) and adapters/pgmeta.py.

The checks, in order (critical unless marked):
 1. object checksum       size and SHA-256 of the downloaded bytes equal the catalog's
 2. archive readable      zstd and pg_restore read the archive to its end
 3. restore               pg_restore exits 0 with no error into the scratch database
 4. connectivity          a new session on the restored database answers
 5. critical tables       every `critical_tables` entry exists
 6. row counts            every table's count equals the manifest's (counted in the dump's snapshot)
    row count drift       (warning) counts moved more than `row_count_tolerance` since the
                          previous verified backup
 7. functions             (warning) every `functions` entry exists
 8. row-level security    RLS enabled and at least one policy on every `rls_tables` entry
 9. database size         (warning) the restored database is at least `min_size`
10. schema fingerprint    equals the manifest's
11. roles and grants      every role the database references exists after the restore and is in
                          the backup's roles object, and every relation's owner and grants equal
                          the manifest's; `skipped` for a backup taken before roles objects (it
                          restores with --no-owner --no-privileges, as it always did). Roles
                          created on a standing scratch server stay there (cluster-wide, and a
                          concurrent verification may own objects through them)
12. assertion: NAME       each user assertion, with its own severity
13. restore time          (warning) download + decompress + pg_restore within the RTO
14. storage: BUCKET       per `storage` bucket of the target: its manifest with this backup against
                          the previous one (a drop beyond `storage_drop_tolerance` fails) and a
                          sample of the previous manifest's keys still there or recoverable
                          (jobs/storage_manifest/compare.py); independent of the restore, so it runs even
                          when the restore failed
A check that cannot run because an earlier step failed is ``skipped`` and says why.

Safety: the scratch server is never the source database, no identifier is spliced into
SQL as text, and user assertions run one statement each in a read-only transaction
with a statement timeout.
"""

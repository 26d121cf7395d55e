"""Storage-bucket manifests: the application's buckets (uploads, invoices, photos) beside its database.

On the backup schedule, after the database backup, every bucket of ``targets[].storage`` is
listed and its manifest streamed into the backup bucket beside the dump, at
``{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.storage.{bucket}.jsonl.gz``: gzip-compressed
JSON Lines, one object a line::

    {"key": "avatars/42.png", "size": 5120, "etag": "9b2c...", "last_modified": "2026-11-22T17:59:01Z",
     "storage_class": "STANDARD", "version_id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"}

The totals (objects, bytes) and the manifest's SHA-256 go into the backup record's ``storage``
list (`drsentry.core.records.StorageManifestEntry`); a manifest that cannot be written is
recorded there with its error and never fails the database backup. Verify compares a
backup's manifest with the previous one of the same bucket; ``drsentry storage restore-list``
says per key what recreating the bucket as a manifest lists it would need.

Which file holds what:

- ``rules.py``: the manifest row and key layout, human sizes, reservoir sampling, the sample
  report, judging one key against the bucket now: pure, no I/O.
- ``listing.py``: a bucket's current objects and a stored manifest's rows, streamed.
- ``write.py``: writing one bucket's manifest beside the dump (called by the backup job).
- ``compare.py``: the verify-time ``storage: BUCKET`` check (called by the verify job).
- ``restore_list.py``: ``drsentry storage restore-list`` (the operator CLI).
"""

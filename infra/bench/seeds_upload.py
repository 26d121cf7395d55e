"""The second half of the seeds' pipeline: upload a finished dump file with boto3.

``pg_dump DSN | gzip > FILE`` writes the file; this uploads it as the seeds did, with
``upload_file`` and boto3's default transfer settings, to whatever ``AWS_ENDPOINT_URL``
names (the bench's local moto server). Run as its own process so that its CPU and memory
are measured like every other contender's.

    python infra/bench/seeds_upload.py FILE BUCKET KEY
"""

from __future__ import annotations

import sys

import boto3


def main() -> int:
    path, bucket, key = sys.argv[1:4]
    boto3.client("s3").upload_file(path, bucket, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())

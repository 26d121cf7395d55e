"""Which runner a backup or verification of a target uses, and why (pure).

`auto` keeps a target on Lambda until one of two signs says its next run may not fit:

- the previous run of the job used more than half of the function's timeout (a database
  grows; half leaves room for a doubling before Lambda kills the run at 15 minutes), or
- the newest dump stored more than `FARGATE_DUMP_BYTES`. Backups stream (nothing lands on
  Lambda's /tmp), so the bound is time, and the slower side is the restore. Measured here
  (infra/bench/RESULTS.md, 2 cores, local socket): a 219 MB dump restores in 12.5 s, about
  17.5 MB of dump a second, so half of 900 s covers about 7.9 GB of dump. Lambda's one vCPU
  (1769 MB) and a database across the network are slower than that machine; with a 4x margin
  a target moves at 2 GB of dump, before its first run that would not fit, where the
  published wall for pg_dump in Lambda is about 10 GB of database.

A target that ran on Fargate stays there until its run takes less than a quarter of the
function's timeout: a task has more CPU than the function, so without that gap a target near
the boundary would alternate between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drsentry.core.records import RunnerName, RunnerUsed

RunnerSetting = Literal["lambda", "fargate", "auto"]
FargateJob = Literal["backup", "verify"]

LAMBDA_SHARE = 0.5
BACK_TO_LAMBDA_SHARE = 0.25
FARGATE_DUMP_BYTES = 2 * 1000**3


@dataclass(frozen=True)
class PreviousRun:
    """What the catalog says of the target's last run of the job and its newest dump."""

    seconds: float | None = None
    runner: RunnerName | None = None
    dump_bytes: int | None = None


def choose_runner(
    setting: RunnerSetting, job: FargateJob, previous: PreviousRun, function_timeout_seconds: float
) -> RunnerUsed:
    if setting != "auto":
        return RunnerUsed(name=setting, reason=f"runner: {setting} in the configuration")
    timeout = function_timeout_seconds
    if previous.dump_bytes is not None and previous.dump_bytes > FARGATE_DUMP_BYTES:
        return RunnerUsed(
            name="fargate",
            reason=f"auto: the newest dump is {previous.dump_bytes / 1e9:.1f} GB, "
            f"over {FARGATE_DUMP_BYTES / 1e9:.0f} GB",
        )
    if previous.seconds is None:
        return RunnerUsed(name="lambda", reason=f"auto: no previous {job} to measure")
    took = f"the previous {job} took {previous.seconds:.0f}s of the function's {timeout:.0f}s"
    if previous.seconds > LAMBDA_SHARE * timeout:
        return RunnerUsed(name="fargate", reason=f"auto: {took}, more than half")
    if previous.runner == "fargate" and previous.seconds >= BACK_TO_LAMBDA_SHARE * timeout:
        return RunnerUsed(name="fargate", reason=f"auto: {took} on Fargate, not yet under a quarter")
    return RunnerUsed(name="lambda", reason=f"auto: {took}")

"""The Fargate task's entry point: one job for one target, as the Lambda would run it.

    python -m drsentry.jobs.fargate.task backup --target app

The image's ENTRYPOINT (infra/Dockerfile); the state machine passes the job and target as the
container's command and the task definition sets the environment:

- ``DRSENTRY_CONFIG_PARAM``: the SSM parameter holding drsentry.yaml (the functions' own);
- ``DRSENTRY_RUN_ID`` (per execution): the run id the records carry, so the state machine's
  failure step can tell whether the run wrote its record before it ended;
- ``DRSENTRY_RUNNER_REASON`` (per execution): why the target runs on Fargate (the records' runner).

The result document is printed as one JSON line (the task's log). Exit codes: 0 the run
succeeded, 1 it ran and recorded a failure (or could not run), 2 bad input or configuration
(one line on stderr), 130 / 143 interrupted by SIGINT / SIGTERM (ECS stopping the task).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from drsentry.core.config import parse_config
from drsentry.core.errors import BadInput, DrsentryError, Interrupted
from drsentry.core.events import ScheduledEvent
from drsentry.core.records import RunnerUsed
from drsentry.jobs.lambda_container import config_parameter, read_config_text
from drsentry.jobs.runner import RunResult
from drsentry.jobs.runtime import Runtime, build_runtime

RUN_ID_ENV = "DRSENTRY_RUN_ID"
REASON_ENV = "DRSENTRY_RUNNER_REASON"
JOBS = ("backup", "verify")


def task_runtime(environ: Mapping[str, str]) -> Runtime:
    """The runtime of a task: the config from the SSM parameter, `runner: fargate` and the run id
    the state machine chose."""
    name = config_parameter()
    runtime = build_runtime(parse_config(read_config_text(name), source=f"ssm:{name}"))
    runtime.runner = RunnerUsed(name="fargate", reason=environ.get(REASON_ENV) or "started as a Fargate task")
    if environ.get(RUN_ID_ENV):
        runtime.run_id = environ[RUN_ID_ENV]
    return runtime


def run_job(runtime: Runtime, job: str, target: str) -> RunResult[Any]:
    # The run id is the event id: a task started again for the same run replays its first result.
    scheduled = ScheduledEvent.now(target, event_id=runtime.run_id, region=runtime.config.storage.region)
    if job == "backup":
        from drsentry.jobs.backup.job import run_scheduled_backup

        return run_scheduled_backup(runtime, scheduled)
    from drsentry.jobs.verify.job import run_scheduled_verify

    return run_scheduled_verify(runtime, scheduled)


def succeeded(result: RunResult[Any]) -> bool:
    statuses = {getattr(record, "status", None) for record in result.records}
    return bool(result.records) and statuses <= {"completed", "success", "warning"} and not result.not_run


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name, 128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drsentry-task", description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--target", required=True)
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_job(task_runtime(os.environ), arguments.job, arguments.target)
    except Interrupted as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except BadInput as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except DrsentryError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result.document(), default=str) + "\n")
    return 0 if succeeded(result) else 1


if __name__ == "__main__":
    sys.exit(main())

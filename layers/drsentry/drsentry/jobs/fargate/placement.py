"""In the Lambda: which runner each target's run uses, and the hand-off to Fargate.

`Placement(runtime, job)` is made once per scheduled run. For each target it reads the
target's previous run from the catalog, applies `rules.choose_runner`, and either hands the
target to the state machine (`hand_off` returns the execution ARN; the Lambda's run of that
target ends there) or gives the run a runtime that records `runner: lambda` and why.
Outside a Lambda of a stack with Fargate (a laptop, or the Fargate task itself) there is
nothing to decide: every target runs where the process is, with the runtime's own `runner`.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from drsentry.adapters.stepfunctions import StateMachine
from drsentry.core.config import TargetConfig
from drsentry.core.observability import logger
from drsentry.core.records import RunnerUsed
from drsentry.jobs.fargate.rules import FargateJob, PreviousRun, choose_runner
from drsentry.jobs.runtime import Runtime


def previous_run(runtime: Runtime, job: FargateJob, target: str) -> PreviousRun:
    """The target's last run of `job` (any status: a run killed by the timeout counts most)
    and the size of its newest completed dump."""
    newest_dump = runtime.catalog.latest_completed(target)
    dump_bytes = newest_dump.size_bytes if newest_dump else None
    if job == "backup":
        last = next(iter(runtime.catalog.list_backups(target, limit=1)), None)
        if last is None:
            return PreviousRun(dump_bytes=dump_bytes)
        ran_on = last.runner.name if last.runner else None
        return PreviousRun(seconds=last.duration_seconds, runner=ran_on, dump_bytes=dump_bytes)
    verification = runtime.catalog.verifications.latest(target)
    if verification is None:
        return PreviousRun(dump_bytes=dump_bytes)
    ran_on = verification.runner.name if verification.runner else None
    return PreviousRun(seconds=verification.restore_seconds, runner=ran_on, dump_bytes=dump_bytes)


class Placement:
    """Runner decisions for one scheduled run of a job."""

    def __init__(self, runtime: Runtime, job: FargateJob) -> None:
        self.runtime = runtime
        self.job = job
        self._chosen: dict[str, RunnerUsed] = {}

    def hand_off(self, target: TargetConfig) -> str | None:
        """The execution ARN when the target goes to Fargate; None when it runs here."""
        hand_off = self.runtime.fargate
        if hand_off is None:
            return None
        previous = previous_run(self.runtime, self.job, target.name)
        choice = choose_runner(target.runner, self.job, previous, hand_off.function_timeout_seconds)
        self._chosen[target.name] = choice
        logger.info(
            "runner chosen",
            extra={"target": target.name, "job": self.job, "runner": choice.name, "reason": choice.reason},
        )
        if choice.name == "lambda":
            return None
        # The task's own run id: its records carry it, and the failure step looks for them by it.
        run_id = uuid.uuid4().hex
        machine = StateMachine(self.runtime.clients.stepfunctions, hand_off.state_machine_arn)
        return machine.start(
            f"{self.job}-{target.name}-{run_id}",
            {"job": self.job, "target": target.name, "run_id": run_id, "reason": choice.reason},
        )

    def runtime_for(self, target: TargetConfig) -> Runtime:
        """The runtime a target that runs here runs with: its `runner` is what was decided."""
        choice = self._chosen.get(target.name)
        return self.runtime if choice is None else replace(self.runtime, runner=choice)

"""Targets too big for Lambda: the same backup and verify as an ECS Fargate task, driven by a
Step Functions state machine (infra/statemachine/run_task.asl.json).

- `rules.py`: which runner a target's run uses, and why (pure; the records' `runner`).
- `placement.py`: in the Lambda, decide per target and hand a Fargate target to the state
  machine instead of running it.
- `task.py`: the container's entry point (`python -m drsentry.jobs.fargate.task JOB --target
  NAME`): the config from the same SSM parameter, the run id the state machine gave it.
- `task_failed.py`: the state machine's failure step: a `failed` record and the usual notice
  for a task that could not write one (OOM kill, stop, non-zero exit, timeout).
"""

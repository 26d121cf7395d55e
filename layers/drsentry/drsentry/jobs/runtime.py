"""What every capability needs, built from the validated config.

The CLI, the Lambda handlers, the local stack and the tests all build a `Runtime` the
same way, so every capability runs unchanged in each of them. The clients, the secrets
cache and the notifier are built once (per process, per Lambda container); a run gets
its own run id, deadline and Lambda context through `for_invocation`.
"""

from __future__ import annotations

import ctypes
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.buckets import Buckets, ObjectStore
from drsentry.adapters.secrets import Credentials
from drsentry.adapters.table import Catalog
from drsentry.core.config import Config
from drsentry.core.deadlines import Remaining, lambda_deadline, no_deadline
from drsentry.core.progress import NO_PROGRESS, Progress
from drsentry.core.records import RunnerUsed, RunNotice, utc_now
from drsentry.jobs.notify.notifier import Notifier as SnsSlackNotifier


@dataclass(frozen=True)
class FargateHandOff:
    """What a Lambda needs to hand a target to Fargate instead of running it."""

    state_machine_arn: str
    function_timeout_seconds: float


class Notifier(Protocol):
    def send(self, notice: RunNotice, *, failing_checks: list[str] | None = None) -> Any: ...


@dataclass
class Runtime:
    config: Config
    clients: AwsClients
    catalog: Catalog
    store: ObjectStore
    buckets: Buckets
    credentials: Credentials
    notifier: Notifier | None = None
    # Seconds this run may still use (Lambda's remaining time), None when unbounded.
    remaining_seconds: Remaining = no_deadline
    clock: Callable[[], datetime] = utc_now
    lambda_context: Any = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # How far long work got (bytes dumped or restored, the phase); the CLI draws it in a terminal.
    progress: Progress = NO_PROGRESS
    # Where this run runs and why (the records' `runner`); None outside AWS.
    runner: RunnerUsed | None = None
    # Set in a Lambda of a stack with Fargate: the state machine that runs a target as an ECS
    # task, and the function's whole timeout (jobs/fargate/placement.py).
    fargate: FargateHandOff | None = None

    def for_invocation(self, lambda_context: Any = None) -> Runtime:
        """This runtime's shared services (clients, secrets cache, notifier) for one more run:
        a new run id, and the deadline of `lambda_context` (none outside Lambda)."""
        return replace(
            self,
            remaining_seconds=lambda_deadline(lambda_context),
            lambda_context=lambda_context,
            run_id=uuid.uuid4().hex,
        )


# glibc's malloc gives a freed large block back to the heap and raises its mmap threshold
# to that block's size (up to 32 MiB), so later multi-MiB buffers (upload parts, decoded
# slices) are carved out of the heap, which keeps its high-water mark. A fixed threshold
# keeps each of them in its own mapping, returned to the OS when freed; the 1 MiB read
# chunks stay on the heap. Benchmark database backup: peak RSS 134 -> 128 MiB, growth
# from the small database +9% -> +2%, for at most a few tenths of a CPU-second.
M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 2 * 1024 * 1024


def keep_large_buffers_off_the_heap() -> bool:
    """Set glibc's mmap threshold; False where the C library is not glibc (nothing to do)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))


def build_runtime(
    config: Config, *, clients: AwsClients | None = None, lambda_context: Any = None
) -> Runtime:
    keep_large_buffers_off_the_heap()
    clients = clients or AwsClients(config.storage.region)
    runtime = Runtime(
        config=config,
        clients=clients,
        catalog=Catalog(clients.dynamodb, config.catalog.table),
        store=ObjectStore(clients.s3(config.storage.region), config.storage.kms_key),
        buckets=Buckets(clients, config.storage.kms_key),
        credentials=Credentials(clients),
        remaining_seconds=lambda_deadline(lambda_context),
        lambda_context=lambda_context,
    )
    runtime.notifier = SnsSlackNotifier(
        config,
        clients,
        alert_states=runtime.catalog.alert_states,
        credentials=runtime.credentials,
        clock=runtime.clock,
    )
    return runtime

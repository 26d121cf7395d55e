"""Once per scheduled event: Powertools Idempotency on the catalog table.

The key is (source, event id, target), so a redelivered or retried schedule returns the
first run's result instead of running again. Records expire through the table's TTL.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from drsentry.core.errors import BackupInProgress
from drsentry.jobs.runtime import Runtime

RESULT_KEEP_SECONDS = 7 * 86400
# Outside Lambda there is no remaining time to register; the lock's expiry covers crashes.
warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")


def once_per_event(
    runtime: Runtime, request: dict[str, Any], work: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Run `work(request)` unless this request already ran; return the stored result."""
    persistence = runtime.catalog.idempotency_persistence()
    config = IdempotencyConfig(
        event_key_jmespath="[source, event_id, target]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=RESULT_KEEP_SECONDS,
        use_local_cache=False,
    )

    if runtime.lambda_context is not None:
        config.register_lambda_context(runtime.lambda_context)

    @idempotent_function(data_keyword_argument="request", persistence_store=persistence, config=config)
    def scheduled_run(request: dict[str, Any]) -> dict[str, Any]:
        return work(request)

    try:
        return scheduled_run(request=request)
    except IdempotencyAlreadyInProgressError as exc:
        raise BackupInProgress(
            f"event {request.get('event_id')} for {request.get('source')} is already being processed"
        ) from exc

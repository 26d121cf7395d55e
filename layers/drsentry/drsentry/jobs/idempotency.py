"""Once per scheduled event: Powertools Idempotency on the catalog table.

The key is (source, event id, target), so a redelivered or retried schedule returns the
first run's result instead of running again. The result is a pydantic model, stored as
JSON and validated back into the same model on replay. Records expire through the
table's TTL.

What the idempotency layer raises is turned into a domain error here, in one line: the
event already being processed is `RunInProgress`; the table unreachable, missing or
refusing is `CatalogError`; no AWS credentials at all is `CredentialsError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import BaseError as IdempotencyError
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from pydantic import BaseModel, ValidationError

from drsentry.adapters.aws_errors import aws_cause, describe, is_no_credentials
from drsentry.core.errors import CatalogError, CredentialsError, DrsentryError, RunInProgress
from drsentry.jobs.runtime import Runtime

RESULT_KEEP_SECONDS = 7 * 86400
# Outside Lambda there is no remaining time to register; the lock's expiry covers crashes.
warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")

ResultT = TypeVar("ResultT", bound=BaseModel)


class _Stopped(Exception):
    """Ctrl-C or SIGTERM, carried through the guard as an Exception: Powertools forgets the event
    of a run that raised one (it ignores a KeyboardInterrupt, which would leave the event "in
    progress" for RESULT_KEEP_SECONDS), so a retry of an interrupted run's event runs again."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


class _StoredResult(PydanticSerializer):
    """The stored result, validated back into the run's result model on replay."""

    def from_dict(self, data: dict[str, Any]) -> BaseModel:
        try:
            return super().from_dict(data)
        except ValidationError as exc:
            # A result stored by an older release: the run happened, it must not run again.
            raise CatalogError(
                f"the stored result of this event does not read back ({exc.error_count()} problem(s)); "
                "the run is not repeated"
            ) from exc


def once_per_event(
    runtime: Runtime, request: dict[str, str], result_type: type[ResultT], work: Callable[[], ResultT]
) -> ResultT:
    """Run `work()` unless this request (source, event_id, target) already ran; then return
    the stored result. Errors of `work` itself propagate unchanged."""
    persistence = runtime.catalog.idempotency_persistence()
    config = IdempotencyConfig(
        event_key_jmespath="[source, event_id, target]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=RESULT_KEEP_SECONDS,
        use_local_cache=False,
    )

    if runtime.lambda_context is not None:
        config.register_lambda_context(runtime.lambda_context)

    @idempotent_function(
        data_keyword_argument="request",
        persistence_store=persistence,
        config=config,
        output_serializer=_StoredResult(result_type),
    )
    def scheduled_run(request: dict[str, str]) -> ResultT:
        try:
            return work()
        except KeyboardInterrupt as interrupt:
            raise _Stopped(interrupt) from interrupt

    try:
        result: ResultT = scheduled_run(request=request)
    except _Stopped as stopped:
        raise stopped.interrupt from None  # the run's own exception, as it raised it
    except IdempotencyAlreadyInProgressError as exc:
        raise RunInProgress(
            f"event {request['event_id']} for {request['source']} is already being processed "
            "by another run; not starting a second one"
        ) from exc
    except IdempotencyError as exc:
        raise idempotency_failure(runtime.config.catalog.table, request["source"], exc) from exc
    return result


def idempotency_failure(table: str, source: str, exc: IdempotencyError) -> DrsentryError:
    """One line for a failure of the idempotency record itself (not of the run)."""
    cause = aws_cause(exc)
    if cause is not None and is_no_credentials(cause):
        return CredentialsError(
            f"no AWS credentials found to reach the catalog table {table!r} "
            '(for the local stack: eval "$(drsentry local env)")'
        )
    reason = describe(cause) if cause is not None else _first_line(exc)
    return CatalogError(
        f"catalog table {table!r}: the once-per-event record of this {source} run failed: {reason}"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

"""The Lambda side of the edge: what a container keeps between invocations.

Each handler module builds one `LambdaContainer` at module scope, as Powertools' own
examples build their boto3 session: the AWS clients, the secrets cache (Credentials), the
notifier and the parsed config then live as long as the container, so warm invocations
reuse them (one GetSecretValue per secret and cache period, not one per invocation).
Only the run id, the deadline and the Lambda context belong to an invocation.

The config parameter (named by ``DRSENTRY_CONFIG_PARAM``) is read through Powertools
Parameters, cached for ``CONFIG_CACHE_SECONDS``; when its text changes the shared
services are built again from the new config.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from drsentry.core.config import parse_config
from drsentry.core.errors import ConfigError
from drsentry.jobs.runtime import FargateHandOff, Runtime, build_runtime

CONFIG_PARAM_ENV = "DRSENTRY_CONFIG_PARAM"
# Set on the backup and verify functions: the state machine that runs a target on Fargate.
STATE_MACHINE_ENV = "DRSENTRY_STATE_MACHINE_ARN"
CONFIG_CACHE_SECONDS = 300


def config_parameter() -> str:
    name = os.environ.get(CONFIG_PARAM_ENV)
    if not name:
        raise ConfigError(f"{CONFIG_PARAM_ENV} is not set: the function does not know its configuration")
    return name


def read_config_text(name: str, *, fresh: bool = False) -> str:
    """The parameter's text, cached for CONFIG_CACHE_SECONDS unless `fresh`."""
    try:
        return str(parameters.get_parameter(name, max_age=CONFIG_CACHE_SECONDS, force_fetch=fresh))
    except GetParameterError as exc:
        raise ConfigError(f"cannot read SSM parameter {name!r}: {exc}") from exc


class LambdaContainer:
    """The services one Lambda container shares across its invocations."""

    def __init__(self) -> None:
        self._config_text: str | None = None
        self._shared: Runtime | None = None

    def runtime(self, context: Any) -> Runtime:
        """A runtime for this invocation: the container's services, its own run id and deadline."""
        name = config_parameter()
        text = read_config_text(name)
        if self._shared is None or text != self._config_text:
            self._shared = build_runtime(parse_config(text, source=f"ssm:{name}"))
            self._config_text = text
        runtime = self._shared.for_invocation(context)
        state_machine_arn = os.environ.get(STATE_MACHINE_ENV)
        if state_machine_arn and context is not None:
            # At the start of the invocation the time left is the function's timeout.
            timeout_seconds = context.get_remaining_time_in_millis() / 1000
            runtime.fargate = FargateHandOff(state_machine_arn, timeout_seconds)
        return runtime

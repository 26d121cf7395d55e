"""The Lambda side of the edge: the config from SSM, a runtime bound to the invocation.

The config parameter (named by ``DRSENTRY_CONFIG_PARAM``) is read through Powertools
Parameters and cached across warm invocations; each invocation gets its own runtime so
the remaining time and run id belong to it.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from drsentry.core.config import Config, parse_config
from drsentry.core.errors import ConfigError
from drsentry.jobs.runtime import Runtime, build_runtime

CONFIG_PARAM_ENV = "DRSENTRY_CONFIG_PARAM"
CONFIG_CACHE_SECONDS = 300


def load_lambda_config() -> Config:
    name = os.environ.get(CONFIG_PARAM_ENV)
    if not name:
        raise ConfigError(f"{CONFIG_PARAM_ENV} is not set: the function does not know its configuration")
    try:
        text = parameters.get_parameter(name, max_age=CONFIG_CACHE_SECONDS)
    except GetParameterError as exc:
        raise ConfigError(f"cannot read SSM parameter {name!r}: {exc}") from exc
    return parse_config(str(text), source=f"ssm:{name}")


def lambda_runtime(context: Any) -> Runtime:
    return build_runtime(load_lambda_config(), lambda_context=context)

"""What a Lambda container keeps between invocations (jobs/lambda_container.py): the config,
clients, secrets cache and notifier; and what each invocation gets of its own."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters

from drsentry.core.errors import ConfigError
from drsentry.jobs.lambda_container import CONFIG_PARAM_ENV, LambdaContainer

pytestmark = pytest.mark.integration

NO_SOURCE = "postgresql://nobody@127.0.0.1:1/none"


@dataclass
class FakeLambdaContext:
    remaining_ms: int
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def config_parameter(make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The config in an SSM parameter, as the deployed functions read it: (name, text)."""
    _, path = make_config(NO_SOURCE)
    name = f"/drsentry/config-{secrets.token_hex(4)}"
    text = path.read_text()
    clients.ssm.put_parameter(Name=name, Value=text, Type="String")
    monkeypatch.setenv(CONFIG_PARAM_ENV, name)
    return name, text


def test_warm_invocations_share_the_services_and_get_their_own_run(config_parameter: tuple[str, str]) -> None:
    container = LambdaContainer()

    first = container.runtime(FakeLambdaContext(remaining_ms=600_000))
    second = container.runtime(FakeLambdaContext(remaining_ms=30_000, aws_request_id="req-2"))

    # What the container keeps: the config, the clients, the secrets cache, the notifier
    assert second.config is first.config
    assert second.clients is first.clients
    assert second.credentials is first.credentials
    assert second.notifier is first.notifier
    # What each invocation has of its own: a run id, its deadline, its context
    assert second.run_id != first.run_id
    assert second.remaining_seconds() == 30.0
    assert first.remaining_seconds() == 600.0
    assert second.lambda_context.aws_request_id == "req-2"


def test_services_are_rebuilt_only_when_the_config_text_changes(
    config_parameter: tuple[str, str], clients: Any
) -> None:
    name, text = config_parameter
    container = LambdaContainer()
    before = container.runtime(FakeLambdaContext(remaining_ms=600_000))

    # The parameter read again after its cache expired, unchanged: the same services
    parameters.clear_caches()
    assert container.runtime(FakeLambdaContext(remaining_ms=600_000)).clients is before.clients

    # Changed: the services are built from the new config
    clients.ssm.put_parameter(Name=name, Value=text.replace("rpo: 1h", "rpo: 2h"), Overwrite=True)
    parameters.clear_caches()
    after = container.runtime(FakeLambdaContext(remaining_ms=600_000))
    assert after.clients is not before.clients
    assert after.credentials is not before.credentials
    assert after.config.rpo == timedelta(hours=2)


def test_a_missing_config_parameter_is_a_config_error(clients: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"/drsentry/missing-{secrets.token_hex(4)}"
    monkeypatch.setenv(CONFIG_PARAM_ENV, name)

    with pytest.raises(ConfigError, match=f"cannot read SSM parameter '{name}'"):
        LambdaContainer().runtime(FakeLambdaContext(remaining_ms=600_000))

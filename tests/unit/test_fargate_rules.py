"""Which runner a target's backup or verification uses, and the reason recorded with it."""

from __future__ import annotations

import pytest

from drsentry.core.config import parse_config
from drsentry.core.errors import ConfigError
from drsentry.jobs.fargate.rules import FARGATE_DUMP_BYTES, PreviousRun, choose_runner

TIMEOUT = 900.0


def test_a_target_runs_on_lambda_until_it_has_a_previous_run() -> None:
    choice = choose_runner("auto", "backup", PreviousRun(), TIMEOUT)
    assert (choice.name, choice.reason) == ("lambda", "auto: no previous backup to measure")


def test_a_previous_run_within_half_the_timeout_stays_on_lambda() -> None:
    choice = choose_runner("auto", "backup", PreviousRun(seconds=449, runner="lambda"), TIMEOUT)
    assert choice.name == "lambda"
    assert "449s of the function's 900s" in choice.reason


def test_a_previous_run_over_half_the_timeout_moves_to_fargate() -> None:
    choice = choose_runner("auto", "verify", PreviousRun(seconds=451, runner="lambda"), TIMEOUT)
    assert choice.name == "fargate"
    assert choice.reason == "auto: the previous verify took 451s of the function's 900s, more than half"


def test_a_dump_over_the_size_bound_moves_to_fargate_even_when_it_was_quick() -> None:
    previous = PreviousRun(seconds=60, runner="lambda", dump_bytes=FARGATE_DUMP_BYTES + 1)
    choice = choose_runner("auto", "backup", previous, TIMEOUT)
    assert choice.name == "fargate"
    assert "the newest dump is 2.0 GB, over 2 GB" in choice.reason


def test_a_fargate_target_returns_to_lambda_only_under_a_quarter_of_the_timeout() -> None:
    staying = choose_runner("auto", "backup", PreviousRun(seconds=300, runner="fargate"), TIMEOUT)
    returning = choose_runner("auto", "backup", PreviousRun(seconds=200, runner="fargate"), TIMEOUT)
    assert staying.name == "fargate" and "not yet under a quarter" in staying.reason
    assert returning.name == "lambda"


@pytest.mark.parametrize("setting", ["lambda", "fargate"])
def test_a_runner_set_in_the_config_is_used_whatever_the_history(setting: str) -> None:
    choice = choose_runner(setting, "backup", PreviousRun(seconds=899, dump_bytes=10**12), TIMEOUT)  # type: ignore[arg-type]
    assert (choice.name, choice.reason) == (setting, f"runner: {setting} in the configuration")


CONFIG = """
storage: {bucket: b, region: us-east-1}
targets:
  - name: app
    dsn: postgresql://localhost/app
    runner: %s
"""


def test_runner_defaults_to_auto() -> None:
    config = parse_config(CONFIG.replace("    runner: %s\n", ""), source="drsentry.yaml")
    assert config.targets[0].runner == "auto"


def test_an_unknown_runner_is_one_line_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG % "kubernetes", source="drsentry.yaml")
    message = str(caught.value)
    assert message.startswith("drsentry.yaml: targets[0].runner: ")
    assert "\n" not in message

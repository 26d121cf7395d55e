"""How long a run may still take: Lambda's remaining time, a fixed budget, or no limit.

Every long step asks a `Remaining` callable instead of a clock of its own, so a Lambda
invocation, a Fargate task, the CLI and a test bound the same code the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Seconds this run may still use, or None when nothing bounds it.
Remaining = Callable[[], float | None]


def no_deadline() -> float | None:
    return None


def lambda_deadline(context: Any) -> Remaining:
    """Remaining seconds of a Lambda invocation, from its context."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return no_deadline
    return lambda: float(context.get_remaining_time_in_millis()) / 1000.0


def monotonic_deadline(seconds: float) -> Remaining:
    end = time.monotonic() + seconds
    return lambda: end - time.monotonic()

"""How durations read in tables, summaries and notices: one formatter for every one of them."""

from __future__ import annotations


def human_seconds(seconds: float) -> str:
    """`45s`, `12m`, `3.5h`, `2.0d`: whole units up to twice their size, so a lag of 90 minutes
    reads `90m`, not `1.5h`."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

"""How long work reports how far it got: the port a job calls, and the one that does nothing.

A backup advances it by the bytes pg_dump wrote, a verification by the bytes of the backup
fed to pg_restore; `phase` names the step. The CLI installs a progress bar on stderr when
stderr is a terminal (and not --json); everywhere else (Lambda, cron, tests) nothing is drawn.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def phase(self, description: str, total_bytes: int | None = None) -> None:
        """A new step (`app: pg_dump`), with the bytes it will take when they are known."""

    def advance(self, size: int) -> None:
        """`size` more bytes done in the current step."""


class NoProgress:
    def phase(self, description: str, total_bytes: int | None = None) -> None:
        pass

    def advance(self, size: int) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()

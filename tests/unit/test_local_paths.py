"""Where `drsentry local` keeps its state when no directory is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsentry.local.stack import default_state_dir


def test_drsentry_local_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRSENTRY_LOCAL_DIR", str(tmp_path / "stack"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))

    state_dir = default_state_dir()

    assert state_dir == tmp_path / "stack"
    assert state_dir.is_dir()


def test_xdg_state_home_is_used_when_drsentry_local_dir_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DRSENTRY_LOCAL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))

    assert default_state_dir() == tmp_path / "xdg" / "drsentry" / "local"


@pytest.mark.parametrize("xdg_state_home", ["", "relative/state"])
def test_home_local_state_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg_state_home: str
) -> None:
    monkeypatch.delenv("DRSENTRY_LOCAL_DIR", raising=False)
    # The XDG spec says to ignore a relative XDG_STATE_HOME, as if it were unset.
    monkeypatch.setenv("XDG_STATE_HOME", xdg_state_home)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_state_dir() == tmp_path / ".local" / "state" / "drsentry" / "local"

"""Where `drsentry local` keeps its state when no directory is given: the checkout's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsentry.local.stack import default_state_dir


def test_drsentry_local_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "checkout" / ".git").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "checkout")
    monkeypatch.setenv("DRSENTRY_LOCAL_DIR", str(tmp_path / "stack"))

    state_dir = default_state_dir()

    assert state_dir == tmp_path / "stack"
    assert state_dir.is_dir()


def test_a_clone_keeps_its_stack_at_its_root_from_any_subdirectory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a clone (.git is a directory) and a shell in one of its subdirectories
    (tmp_path / "clone" / ".git").mkdir(parents=True)
    (tmp_path / "clone" / "infra" / "bench").mkdir(parents=True)
    monkeypatch.delenv("DRSENTRY_LOCAL_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "clone" / "infra" / "bench")

    # Then the stack lives at the clone's root, where .gitignore lists .drsentry/
    assert default_state_dir() == tmp_path / "clone" / ".drsentry" / "local"
    assert not (tmp_path / "clone" / "infra" / "bench" / ".drsentry").exists()


def test_two_checkouts_get_two_state_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given a clone and a `git worktree` of it (there .git is a file naming the clone's git dir)
    (tmp_path / "clone" / ".git").mkdir(parents=True)
    (tmp_path / "worktree").mkdir()
    (tmp_path / "worktree" / ".git").write_text(
        f"gitdir: {tmp_path / 'clone' / '.git' / 'worktrees' / 'w'}\n"
    )
    monkeypatch.delenv("DRSENTRY_LOCAL_DIR", raising=False)

    monkeypatch.chdir(tmp_path / "clone")
    in_clone = default_state_dir()
    monkeypatch.chdir(tmp_path / "worktree")
    in_worktree = default_state_dir()

    assert in_clone == tmp_path / "clone" / ".drsentry" / "local"
    assert in_worktree == tmp_path / "worktree" / ".drsentry" / "local"


def test_outside_a_checkout_the_current_directory_holds_the_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a directory in no checkout, and a home that once held the per-user stack
    monkeypatch.delenv("DRSENTRY_LOCAL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")

    assert default_state_dir() == tmp_path / "work" / ".drsentry" / "local"
    assert not (tmp_path / "xdg").exists()
    assert not (tmp_path / "home").exists()

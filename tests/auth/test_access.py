"""The access decisions a server keeps for a second."""

from __future__ import annotations

from pathlib import Path

from plinth.auth.access import Access, local_principal
from plinth.store.engine import open_store


def access(tmp_path: Path) -> Access:
    made = Access(open_store(f"sqlite:///{tmp_path / 'plinth.db'}"), local_principal("me"))
    made.decision_seconds = 60.0
    return made


def test_a_decision_is_kept_and_forgotten_when_grants_change(tmp_path: Path) -> None:
    checks = access(tmp_path)
    answers = iter([1, 2, 3])
    assert checks._remembered(("k",), lambda: next(answers)) == 1
    assert checks._remembered(("k",), lambda: next(answers)) == 1  # kept
    checks.forget_decisions()
    assert checks._remembered(("k",), lambda: next(answers)) == 2


def test_an_answer_read_while_grants_changed_is_not_kept(tmp_path: Path) -> None:
    checks = access(tmp_path)

    def read_across_a_change() -> int:
        checks.forget_decisions()  # a revoke commits while this reading is under way
        return 1

    assert checks._remembered(("k",), read_across_a_change) == 1
    assert checks._remembered(("k",), lambda: 2) == 2  # decided again, not the stale 1


def test_no_such_resource_is_not_kept(tmp_path: Path) -> None:
    checks = access(tmp_path)
    assert checks._remembered(("run",), lambda: None) is None
    assert checks._remembered(("run",), lambda: 7) == 7

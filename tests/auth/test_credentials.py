"""Tokens saved by ``plinth login``: one per server, in a file only its user may read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plinth.auth.credentials import credentials_path, forget_token, save_token, saved_token


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_token_is_saved_per_server_readable_by_its_user_alone(config_home: Path) -> None:
    path = save_token("http://a:5151/", "plt_a")
    save_token("http://b:5151", "plt_b")
    assert path == credentials_path() == config_home / "plinth" / "credentials.json"
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert saved_token("http://a:5151") == "plt_a"  # a trailing slash names the same server
    assert saved_token("http://b:5151/") == "plt_b"
    assert saved_token("http://c:5151") is None


def test_a_file_left_by_a_crash_does_not_widen_the_mode(config_home: Path) -> None:
    path = save_token("http://a:5151", "plt_a")
    save_token("http://b:5151", "plt_b")
    for write in (
        lambda: save_token("http://c:5151", "plt_c"),
        lambda: forget_token("http://a:5151"),
    ):
        leftover = path.with_suffix(".tmp")
        leftover.write_text("{}")
        leftover.chmod(0o644)
        write()
        assert mode(path) == 0o600
    assert (saved_token("http://a:5151"), saved_token("http://b:5151")) == (None, "plt_b")


def test_forget_and_unreadable_files(config_home: Path) -> None:
    assert forget_token("http://a:5151") is False  # no file
    save_token("http://a:5151", "plt_a")
    assert forget_token("http://a:5151/") is True
    assert forget_token("http://a:5151") is False
    credentials_path().write_text("not json")
    assert saved_token("http://a:5151") is None
    save_token("http://a:5151", "plt_new")  # a broken file is replaced
    assert saved_token("http://a:5151") == "plt_new"

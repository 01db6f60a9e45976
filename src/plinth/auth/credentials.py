"""Tokens saved by ``plinth login``: one per server, in the user's own config folder,
readable by them alone (mode 600)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "plinth" / "credentials.json"


def _key(server: str) -> str:
    return server.rstrip("/")


def saved_token(server: str) -> str | None:
    path = credentials_path()
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    token = saved.get(_key(server)) if isinstance(saved, dict) else None
    return token if isinstance(token, str) else None


def save_token(server: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    saved[_key(server)] = token
    _write(path, saved)
    return path


def _write(path: Path, saved: dict[str, object]) -> None:
    # created 600 before anything is written to it: the tokens are never readable by others
    # (and a temporary file left by a crash, whatever its mode, is made 600 before use)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump(saved, out, indent=2)
    os.replace(temporary, path)


def forget_token(server: str) -> bool:
    path = credentials_path()
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or saved.pop(_key(server), None) is None:
        return False
    _write(path, saved)
    return True

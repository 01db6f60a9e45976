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
    # created 600 before anything is written to it: the token is never readable by others
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(saved, out, indent=2)
    os.chmod(path.with_suffix(".tmp"), 0o600)
    os.replace(path.with_suffix(".tmp"), path)
    return path


def forget_token(server: str) -> bool:
    path = credentials_path()
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or saved.pop(_key(server), None) is None:
        return False
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(saved, out, indent=2)
    os.replace(path.with_suffix(".tmp"), path)
    return True

"""What a run's lineage records about the calling process: code, machine, environment, seed."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
from importlib import metadata, util
from pathlib import Path

from plinth.tracking.types import Environment, Lineage


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def entry_point() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    if not path or path == "-c":
        return None
    return str(Path(path).resolve())


# Git state and installed packages are read once per process: a run start must stay cheap,
# and neither changes under a running training script.
@functools.lru_cache(maxsize=8)
def _code_lineage(where: str) -> tuple[str | None, bool | None, str | None]:
    cwd = Path(where)
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return None, None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    remote = _git(["remote", "get-url", "origin"], cwd)
    return commit, bool(status), _without_credentials(remote)


def _without_credentials(url: str | None) -> str | None:
    """A remote URL without the user:token part (tokens must not land in lineage)."""
    if url is None or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host_and_path = rest.split("@", 1)[1] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{host_and_path}"


def capture_lineage(seed: int | None = None) -> Lineage:
    script = entry_point()
    where = str(Path(script).parent) if script else os.getcwd()
    commit, dirty, remote = _code_lineage(where)
    return Lineage(
        git_commit=commit,
        git_dirty=dirty,
        git_remote=remote,
        entry_point=script,
        host=socket.gethostname(),
        seed=seed,
    )


@functools.lru_cache(maxsize=1)
def capture_environment() -> Environment:
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower()] = dist.version
    python = platform.python_version()
    plat = platform.platform()
    canonical = json.dumps([python, plat, sorted(packages.items())]).encode()
    return Environment(
        hashlib.sha256(canonical).hexdigest(), python, plat, dict(sorted(packages.items()))
    )


def seed_everything(seed: int) -> int:
    """Seed ``random``, NumPy and PyTorch (where installed) with one seed; returns it."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        from plinth.errors import InvalidArgument

        raise InvalidArgument(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed)
    if "torch" in sys.modules or util.find_spec("torch") is not None:
        import torch  # type: ignore[import-not-found,unused-ignore]

        torch.manual_seed(seed)
    return seed

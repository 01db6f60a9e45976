"""Start ``log_points.py`` workers, release them together, collect what they printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("log_points.py")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    ready: Path | None


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


def spawn(
    folder: Path, name: str, *args: str, go: Path | None = None, env: dict[str, str] | None = None
) -> Worker:
    """A worker writing its output to files (pipes could fill up while we wait on another)."""
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / f"{name}.ready" if go else None
    gate = ["--go", str(go), "--ready", str(ready)] if go else []
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args, *gate],
            stdout=stdout,
            stderr=stderr,
            cwd=folder,
            env={**os.environ, **(env or {})},
        )
    return Worker(proc, out, err, ready)


def release(workers: list[Worker], go: Path, timeout: float = 60) -> None:
    """Wait until every worker is at the start line, then let them all go at once."""
    deadline = time.monotonic() + timeout
    while not all(w.ready is not None and w.ready.exists() for w in workers):
        dead = [w for w in workers if w.proc.poll() is not None]
        if dead:
            go.touch()
            raise AssertionError(f"a worker exited before the start: {dead[0].stderr.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError("workers did not reach the start line in time")
        time.sleep(0.01)
    go.touch()


def finish(workers: list[Worker], timeout: float = 120) -> list[Finished]:
    deadline = time.monotonic() + timeout
    try:
        for w in workers:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    return [
        Finished(w.proc.returncode, w.stdout.read_text(), w.stderr.read_text()) for w in workers
    ]

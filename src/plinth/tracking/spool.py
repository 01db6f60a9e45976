"""The local spool: every metric point ``log_metric`` acknowledges is on disk first.

Each call appends one record to the run's spool file with one ``write`` system call: the
data is then in the operating system's page cache, which the kernel writes out even if
the process is SIGKILLed the next instant (a power cut can still lose the last seconds:
nothing here calls ``fsync``, which would cost a disk round trip per point). The buffer
writes the points to the store in batches marked with their spool position; the store
keeps each spool's progress in the same transaction, so a batch written twice is written
once. Segments the store holds entirely are deleted as the run goes; the rest is replayed
by the next process that uses the same Plinth home (``recover``, ``plinth runs recover``).

Layout: ``<home>/spool/<run id>/<spool id>/`` holding ``lock`` (held with ``flock`` while
the writing process lives, released by the kernel when it dies), ``target`` (a digest of
the store or server the run lives in) and segments ``<first seq>.seg``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from plinth.tracking.types import MetricBatch

Point = tuple[str, float, int, int, bool | None]  # key, value, step, timestamp ms, is_best

_RECORD = struct.Struct("<dqqbH")  # value, step, timestamp ms, is_best (-1 unset), key bytes
_FLAG = {None: -1, False: 0, True: 1}
_FLAG_OF = {-1: None, 0: False, 1: True}
SEGMENT_BYTES = 4 * 1024 * 1024


def target_digest(target: str) -> str:
    """Which store a spool belongs to, without writing its URI (and password) to disk."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


class Spool:
    """The spool of one process logging into one run. ``append`` is called with the run's
    log lock held (records and the buffer stay in the same order); ``written`` from the
    flusher thread."""

    def __init__(self, root: Path, run_id: str, target: str) -> None:
        self.id = uuid.uuid4().hex
        self.folder = root / run_id / self.id
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (self.folder / "target").write_text(target_digest(target))
        self.seq = 0  # points appended so far
        self._segments: deque[tuple[int, Path]] = deque()
        self._fd = -1
        self._size = 0
        self._keys: dict[str, bytes] = {}
        self._goals: dict[str, str] = {}
        self._open_segment()

    def _open_segment(self) -> None:
        path = self.folder / f"{self.seq:020d}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._size = fd, 0
        self._segments.append((self.seq, path))

    def append(self, key: str, value: float, step: int, ms: int, best: bool | None) -> None:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = self._keys[key] = key.encode()
        record = _RECORD.pack(value, step, ms, _FLAG[best], len(encoded)) + encoded
        os.write(self._fd, record)  # in the page cache when this returns: SIGKILL-safe
        self.seq += 1
        self._size += len(record)
        if self._size >= SEGMENT_BYTES:
            self._open_segment()

    def set_goal(self, key: str, goal: str) -> None:
        """Keep ``define_metric``'s goals with the points (rare: a small JSON file)."""
        self._goals[key] = goal
        partial = self.folder / "goals.partial"
        partial.write_text(json.dumps(self._goals))
        partial.replace(self.folder / "goals")

    def written(self, upto: int) -> None:
        """The store holds the first ``upto`` points: delete the segments that only hold
        those (never the one being appended to)."""
        while len(self._segments) > 1 and self._segments[1][0] <= upto:
            _, path = self._segments.popleft()
            path.unlink(missing_ok=True)

    def close(self, *, remove: bool) -> None:
        """Stop appending; ``remove`` deletes the spool (everything is in the store)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.folder.parent.rmdir()  # the run's folder, when no other spool is left
        os.close(self._lock_fd)


def read_points(folder: Path) -> tuple[int, list[Point]]:
    """The points of a spool's segments, in order, from the first segment's position.

    A record the process was writing when it died is cut short: it is left out (its
    ``log_metric`` call had not returned)."""
    segments = sorted(folder.glob("*.seg"))
    if not segments:
        return 0, []
    first = int(segments[0].stem)
    points: list[Point] = []
    for path in segments:
        if int(path.stem) != first + len(points):
            break  # a gap: a later segment without the one before cannot be placed
        data = path.read_bytes()
        at, size = 0, _RECORD.size
        while at + size <= len(data):
            value, step, ms, flag, n = _RECORD.unpack_from(data, at)
            if at + size + n > len(data):
                break
            key = data[at + size : at + size + n].decode()
            points.append((key, value, step, ms, _FLAG_OF[flag]))
            at += size + n
    return first, points


@dataclass(frozen=True)
class Orphan:
    """A spool whose process is gone: its points wait to be replayed."""

    run_id: str
    folder: Path


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[bool]:
    """Take a spool's lock without waiting: False while its process still lives."""
    try:
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def orphans(root: Path, target: str, run_id: str | None = None) -> list[Orphan]:
    """Spools under ``root`` for runs of ``target`` (only ``run_id``'s if given)."""
    if not root.is_dir():
        return []
    digest = target_digest(target)
    runs = [root / run_id] if run_id else sorted(p for p in root.iterdir() if p.is_dir())
    found = []
    for run in runs:
        if not run.is_dir():
            continue
        for folder in sorted(p for p in run.iterdir() if p.is_dir()):
            try:
                mine = (folder / "target").read_text() == digest
            except OSError:
                mine = False
            if mine:
                found.append(Orphan(run.name, folder))
    return found


_replaying = threading.Lock()


def replay(
    orphan: Orphan, write: Callable[[str, MetricBatch], None], batch_points: int = 50_000
) -> int | None:
    """Write an orphaned spool's points (the store skips what it holds) and delete it.

    Returns the points sent, or None when the spool's process still lives."""
    with _replaying, claimed(orphan.folder) as mine:
        if not mine:
            return None
        first, points = read_points(orphan.folder)
        spool = orphan.folder.name
        try:
            goals = json.loads((orphan.folder / "goals").read_text())
        except (OSError, ValueError):
            goals = {}
        for at in range(0, len(points), batch_points):
            chunk = points[at : at + batch_points]
            keys, values, steps, stamps, best = (list(c) for c in zip(*chunk, strict=True))
            write(
                orphan.run_id,
                MetricBatch(keys, values, steps, stamps, best, goals, spool, first + at),
            )
        shutil.rmtree(orphan.folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        orphan.folder.parent.rmdir()
    return len(points)

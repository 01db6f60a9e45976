"""Streaming scoring: follow a folder and score each new Parquet file once, or follow a
Delta table and score the rows each new commit adds, once.

Each file is one job and one Delta commit of the score table (``plinth.serving.batch``),
its key a hash of the output, the file's name and a sha256 of its content; the commit's
metadata names the file (``plinth.input``) and its fingerprint (``plinth.fingerprint``).
Each commit of a followed Delta table that adds rows (a write, append or overwrite, or the
table's creation) is one job likewise, keyed by the output, the table and the version, and
scores the data files that commit added. Commits that only rewrite rows already there
(OPTIMIZE, DELETE, UPDATE, MERGE, RESTORE) or change no data are passed over: their rows
were scored when they arrived.
The table is the checkpoint: after a restart, files whose job it holds are skipped and the
others are scored, so none is missed and none scored twice. A file whose content changes
is a new file. The model URI is resolved at every poll, so following ``@production`` moves
to a newly promoted version; files already scored stay as they were.

Producers should write a file under a hidden name (``.part`` or ``_tmp...``, which are
ignored) and rename it when it is complete. A file that cannot be read, or whose checks
fail, is reported and not tried again by this process (a restart tries it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plinth.errors import InvalidArgument, NotFound, PlinthError
from plinth.serving.batch import ScoreOptions, Scorer, ScoreResult
from plinth.serving.sources import Source, open_source, parquet_files

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from plinth.client import Client

log = logging.getLogger("plinth.serving")


@dataclass(frozen=True)
class FollowEvent:
    """One file handled: its result, or the error that kept its scores back."""

    file: str
    result: ScoreResult | None = None
    error: PlinthError | None = None


def follow(
    client: Client,
    model_uri: str,
    folder: str,
    output: str,
    options: ScoreOptions | None = None,
    *,
    poll_seconds: float = 5.0,
    once: bool = False,
    stop: threading.Event | None = None,
    on_event: Callable[[FollowEvent], None] | None = None,
) -> list[FollowEvent]:
    """Score the Parquet files in ``folder`` that the table ``output`` lacks, then (unless
    ``once``) keep polling every ``poll_seconds`` until ``stop`` is set. Returns the events
    of a ``once`` run (a long run only reports through ``on_event``)."""
    if poll_seconds <= 0:
        raise InvalidArgument(f"poll_seconds must be positive, not {poll_seconds}")
    follower = Follower(client, model_uri, folder, output, options or ScoreOptions())
    stop = stop or threading.Event()
    events: list[FollowEvent] = []
    while not stop.is_set():
        for event in follower.poll(stop):
            if once:
                events.append(event)
            if on_event is not None:
                on_event(event)
        if once or stop.wait(poll_seconds):
            break
    return events


class Follower:
    def __init__(
        self, client: Client, model_uri: str, folder: str, output: str, options: ScoreOptions
    ) -> None:
        remote = "://" in folder and not folder.startswith("file://")
        self.folder = folder if remote else os.path.abspath(os.path.expanduser(folder))
        self.commits = DeltaCommits(self.folder) if remote or is_delta(self.folder) else None
        if self.commits is None and not os.path.isdir(self.folder):
            raise NotFound(f"folder {folder!r} to follow does not exist")
        self.client = client
        self.model_uri = model_uri
        self.output = output
        self.options = options
        self.scorer: Scorer | None = None
        if self.commits is not None and _same(self.commits.uri, output):
            raise InvalidArgument("a score table cannot follow itself: give another --output")
        self.fingerprints: dict[tuple[str, int, int], str] = {}
        self.settled: set[str] = set()  # job keys done, delivered or refused, in this process
        self.scorer = self._scorer()

    def poll(self, stop: threading.Event) -> Iterator[FollowEvent]:
        """Score each new file in name order (each new commit in version order); stops
        between them when ``stop`` is set."""
        scorer = self._scorer()
        if self.commits is not None:
            for version in self.commits.new():
                if stop.is_set():
                    return
                event = self._commit(scorer, version)
                self.commits.seen = version  # settled: not looked at again by this process
                if event is not None:
                    yield event
            return
        inside = os.path.join(scorer.table.uri, "")
        for path in parquet_files(self.folder):
            if stop.is_set():
                return
            if path.startswith(inside):  # the score table may live in the folder
                continue
            event = self._file(scorer, path)
            if event is not None:
                yield event

    def _file(self, scorer: Scorer, path: str) -> FollowEvent | None:
        name = os.path.relpath(path, self.folder)
        try:
            fingerprint = self._fingerprint(path)
        except FileNotFoundError:
            return None  # renamed or removed since it was listed
        parts = [scorer.table.uri, name, fingerprint]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]
        if key in self.settled:
            return None
        self.settled.add(key)
        if scorer.table.delivered(key) is not None:
            return None
        try:
            source = open_source(path, identity=fingerprint)
            result = scorer.run(source, key, {"plinth.fingerprint": fingerprint})
        except PlinthError as e:
            return FollowEvent(name, error=e)
        return FollowEvent(name, result)

    def _commit(self, scorer: Scorer, version: int) -> FollowEvent | None:
        assert self.commits is not None
        name = f"version {version}"
        parts = [scorer.table.uri, self.commits.uri, version]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]
        if key in self.settled:
            return None
        self.settled.add(key)
        if scorer.table.delivered(key) is None:
            try:
                source = self.commits.added(version)
                if source is None:  # rewrote or changed no rows
                    return None
                result = scorer.run(source, key, {"plinth.input_version": str(version)})
            except PlinthError as e:
                return FollowEvent(name, error=e)
            return FollowEvent(name, result)
        return None

    def _fingerprint(self, path: str) -> str:
        stat = os.stat(path)
        seen = (path, stat.st_size, stat.st_mtime_ns)
        if seen not in self.fingerprints:
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            self.fingerprints[seen] = f"sha256:{digest.hexdigest()}"
        return self.fingerprints[seen]

    def _scorer(self) -> Scorer:
        """The scorer of the version the URI names now (loaded again when it moved)."""
        from plinth.serving.model import load_served

        current = self.client.get_model_version(self.model_uri)
        scorer = self.scorer
        if scorer is None or scorer.served.version.version != current.version:
            pinned = f"models:/{current.model_name}/{current.version}"
            served = load_served(self.client, pinned, trust_pickle=self.options.trust_pickle)
            self.scorer = scorer = Scorer(self.client, served, self.output, self.options)
        return scorer


# -- following a Delta table ---------------------------------------------------------

# the operations whose commits add rows that were not there before
_ADDING = {
    "CREATE TABLE", "CREATE OR REPLACE TABLE", "CREATE TABLE AS SELECT",
    "REPLACE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT", "WRITE",
    "STREAMING UPDATE",
}  # fmt: skip


def is_delta(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "_delta_log"))


class DeltaCommits:
    """The commits of a Delta table and the rows each added."""

    def __init__(self, uri: str) -> None:
        from plinth.serving.sources import delta_table

        self.uri = uri
        self.table = delta_table(uri)
        self.seen = -1  # the last version this process settled
        self._operations: dict[int, str] = {}

    def new(self) -> list[int]:
        """The versions after ``seen``, up to the latest as the table is now."""
        from plinth.features.offline import stable_history

        self.table.update_incremental()
        if self.table.version() > self.seen:
            history = stable_history(self.table)  # numbered right while others commit
            self._operations = {int(h["version"]): str(h.get("operation")) for h in history}
        latest = self.table.version()
        return list(range(self.seen + 1, latest + 1))

    def added(self, version: int) -> Source | None:
        """The rows ``version`` added, or None when its operation adds none (or the log
        no longer holds it, once cleaned up past its retention)."""
        import pyarrow.dataset as ds
        from deltalake.exceptions import DeltaError

        from plinth.serving.sources import delta_table

        if self._operations.get(version) not in _ADDING:
            return None
        try:
            before = _files(delta_table(self.uri, version - 1)) if version > 0 else set()
            now = delta_table(self.uri, version)
        except DeltaError as e:  # its log entry was cleaned up before this process saw it
            log.warning("cannot read version %d of %s: %s; not scored", version, self.uri, e)
            return None
        dataset = now.to_pyarrow_dataset()
        fragments = [f for f in dataset.get_fragments() if f.path not in before]
        if not fragments:
            return None
        subset = ds.FileSystemDataset(
            fragments, dataset.schema, dataset.format, filesystem=dataset.filesystem
        )
        return Source(f"{self.uri}@v{version}", subset, f"delta:{self.uri}@{version}")


def _files(table: DeltaTable) -> set[str]:
    """The table's data files as its dataset's fragments name them: relative to its root."""
    root = table.table_uri.removeprefix("file://").rstrip("/") + "/"
    return {uri.removeprefix("file://").removeprefix(root) for uri in table.file_uris()}


def _same(a: str, b: str) -> bool:
    def norm(uri: str) -> str:
        local = "://" not in uri or uri.startswith("file://")
        return os.path.abspath(uri.removeprefix("file://")) if local else uri.rstrip("/")

    return norm(a) == norm(b)

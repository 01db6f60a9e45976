"""Feature drift on write: each insert's profile against a reference window of its group.

The writer profiles the rows it committed (``plinth.stats.profile``) and sends the profile
with the commit; the service stores it (``plinth.store.profiles``) and, in the same
transaction as the commit's record, compares it with the reference the group version's
``DriftReference`` names (``plinth.stats.drift``) and stores the verdict with the commit.

A verdict is JSON, one of:

- checked: ``{"reference": "previous commit 4", "reference_commits": [4],
  "reference_profiles": [7], "profile": 8, **DriftReport.to_dict()}``;
- nothing to compare with (a first commit, a window without commits, a reference commit
  without a profile, a previous commit not recorded yet):
  ``{"reference": None, "reason": "...", "profile": 8}``;
- failed: ``{"reference": "...", "error": "..."}``; the commit is recorded all the same.

No verdict (None): the reference is ``none``, or the writer sent no profile (an older
client).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from plinth.errors import InvalidArgument
from plinth.features.types import DriftReference
from plinth.store.schema import feature_commits, profiles

if TYPE_CHECKING:
    import pyarrow as pa

    from plinth.stats.profile import TableProfile

__all__ = ["DriftReference", "check_reference", "choose_reference", "judge", "profile_of"]

logger = logging.getLogger(__name__)

KINDS = ("previous", "days", "commit", "none")
PRESETS = ("plinth", "evidently")
DAY_MS = 86_400_000
# a "days" reference merges at most this many profiles (the window's newest): each is read
# and merged inside the commit's write transaction, so a busy group's window is bounded
MAX_WINDOW_PROFILES = 50


def check_reference(reference: DriftReference) -> None:
    """Refuse a reference that cannot be used, naming the bad value (whether a pinned
    commit exists is the service's to check)."""
    if reference.kind not in KINDS:
        raise InvalidArgument(
            f"drift reference kind {reference.kind!r} is not one of {', '.join(KINDS)}"
        )
    if reference.preset not in PRESETS:
        raise InvalidArgument(
            f"drift preset {reference.preset!r} is not one of {', '.join(PRESETS)}"
        )
    if reference.kind == "days":
        if reference.days is None or reference.days <= 0:
            raise InvalidArgument(
                f"a 'days' drift reference needs a positive number of days, got {reference.days}"
            )
    elif reference.days is not None:
        raise InvalidArgument(
            f"days={reference.days} is for a 'days' drift reference, not {reference.kind!r}"
        )
    if reference.kind == "commit":
        if reference.commit is None or reference.commit < 0:
            raise InvalidArgument(
                f"a 'commit' drift reference needs a Delta version, got {reference.commit}"
            )
    elif reference.commit is not None:
        raise InvalidArgument(
            f"commit={reference.commit} is for a 'commit' drift reference, not {reference.kind!r}"
        )


def load_reference(text: str | None) -> DriftReference:
    """A group's stored reference; none stored means the previous commit."""
    if not text:
        return DriftReference()
    return DriftReference(**json.loads(text))


def dump_reference(reference: DriftReference) -> str:
    return json.dumps(
        {
            "kind": reference.kind,
            "days": reference.days,
            "commit": reference.commit,
            "preset": reference.preset,
        }
    )


def profile_of(table: pa.Table, columns: list[str]) -> dict[str, Any]:
    """The profile of the rows a commit wrote, as the writer sends it."""
    from plinth.stats.profile import profile

    return profile(table, columns).to_dict()


def choose_reference(
    conn: Connection,
    group: str,
    version: int,
    commit_version: int,
    at_ms: int,
    reference: DriftReference,
) -> tuple[str, list[int], list[int]] | str:
    """The reference of commit ``commit_version`` (made at ``at_ms``) of ``group`` v
    ``version``: (its description, the reference commits, their stored profile ids), or
    why there is none.

    ``previous`` is the Delta commit just before this one (``commit_version - 1``) or, when
    that one was recorded without a profile, the newest profiled commit before it. An insert
    records the commits before its own first (``insert._record_earlier``), so that commit
    is recorded; when it is not (a caller recording commits itself, out of order), there is
    no verdict and the reason says so, rather than one against an older commit.

    ``days`` is the profiled commits before this one made in the last N days, at most the
    newest ``MAX_WINDOW_PROFILES`` of them (the description then says so)."""
    ref = f"{group}:v{version}"
    found = _commit_profiles(conn, group, version)
    if reference.kind == "commit":
        pinned = [p for p in found if p[0] == reference.commit]
        if not pinned:
            return f"pinned commit {reference.commit} of {ref} has no stored profile"
        return f"pinned commit {reference.commit}", [pinned[0][0]], [pinned[0][1]]
    earlier = [p for p in found if p[0] < commit_version]
    if reference.kind == "days":
        days = reference.days or 0
        window = [p for p in earlier if at_ms - days * DAY_MS <= p[2] <= at_ms]
        if not window:
            return f"no profiled commit of {ref} in the {days} day(s) before this one"
        used = window[-MAX_WINDOW_PROFILES:]
        commits = [p[0] for p in used]
        listed = ", ".join(str(c) for c in commits)
        if len(used) < len(window):
            described = (
                f"the newest {len(used)} of the {len(window)} commits of the last {days} "
                f"day(s): {listed}"
            )
        else:
            described = f"{len(window)} commit(s) of the last {days} day(s): {listed}"
        return described, commits, [p[1] for p in used]
    if commit_version > 0 and not _recorded(conn, group, version, commit_version - 1):
        return (
            f"commit {commit_version - 1} of {ref}, the one before this, is not recorded yet "
            "(its writer is still recording it, or was killed before it did: the next insert "
            "or `plinth features repair` records it): not compared"
        )
    if not earlier:
        return f"the first profiled commit of {ref}: nothing to compare it with"
    newest = earlier[-1]
    return f"previous commit {newest[0]}", [newest[0]], [newest[1]]


def _recorded(conn: Connection, group: str, version: int, commit_version: int) -> bool:
    return (
        conn.execute(
            select(feature_commits.c.id).where(
                feature_commits.c.group_name == group,
                feature_commits.c.group_version == version,
                feature_commits.c.commit_version == commit_version,
            )
        ).first()
        is not None
    )


def _commit_profiles(conn: Connection, group: str, version: int) -> list[tuple[int, int, int]]:
    """(commit version, profile id, commit time in ms) of the group version's profiled
    commits, oldest first."""
    rows = conn.execute(
        select(profiles.c.commit_version, profiles.c.id, feature_commits.c.at)
        .join(
            feature_commits,
            (feature_commits.c.group_name == profiles.c.group_name)
            & (feature_commits.c.group_version == profiles.c.group_version)
            & (feature_commits.c.commit_version == profiles.c.commit_version),
        )
        .where(
            profiles.c.subject_kind == "feature_commit",
            profiles.c.group_name == group,
            profiles.c.group_version == version,
        )
        .order_by(profiles.c.commit_version, profiles.c.id)
    ).all()
    return [(int(r.commit_version), int(r.id), int(r.at)) for r in rows]


def judge(
    conn: Connection,
    group: str,
    version: int,
    commit_version: int,
    at_ms: int,
    current: TableProfile,
    profile_id: int,
    reference: DriftReference,
) -> dict[str, Any] | None:
    """The verdict of a commit whose profile ``current`` is stored as ``profile_id``. A
    failure gives a verdict naming it, never an exception: the commit must be recorded."""
    if reference.kind == "none":
        return None
    described: str | None = None
    try:
        # a savepoint: a failed read must not abort the caller's transaction (PostgreSQL)
        with conn.begin_nested():
            chosen = choose_reference(conn, group, version, commit_version, at_ms, reference)
            if isinstance(chosen, str):
                return {"reference": None, "reason": chosen, "profile": profile_id}
            described, commits, profile_ids = chosen
            merged = _in_order_of(current, _merged(conn, profile_ids))
        from plinth.stats.drift import drift_report

        report = drift_report(merged, current, preset=reference.preset)
        return {
            "reference": described,
            "reference_commits": commits,
            "reference_profiles": profile_ids,
            "profile": profile_id,
            **_strict(report.to_dict()),
        }
    except Exception as exc:
        logger.exception(
            "drift check of commit %s of %s:v%s failed", commit_version, group, version
        )
        return {"reference": described, "error": f"drift check failed: {_named(exc)}"}


def _merged(conn: Connection, profile_ids: list[int]) -> TableProfile:
    from plinth.store.profiles import load_profile

    loaded = [load_profile(conn, i) for i in profile_ids]
    merged = loaded[0]
    for other in loaded[1:]:
        merged = merged.merge(other)
    return merged


def _in_order_of(current: TableProfile, reference: TableProfile) -> TableProfile:
    """``reference`` with its columns in ``current``'s order (the group's features), so the
    verdict lists them as the group does; stored profiles load in name order."""
    first = [n for n in current.columns if n in reference.columns]
    ordered = first + [n for n in reference.columns if n not in current.columns]
    return replace(reference, columns={n: reference.columns[n] for n in ordered})


def dump_verdict(verdict: dict[str, Any] | None) -> str | None:
    return None if verdict is None else json.dumps(_strict(verdict), allow_nan=False)


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as None, so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

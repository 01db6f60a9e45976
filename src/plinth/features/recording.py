"""Recording one Delta commit of a feature group in the central store: its statistics, its
profile (which the service judges for drift against the group's reference) and its
validation report. Used by an insert for its own commit and by ``repair`` for commits
whose writer never recorded them."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument, PayloadTooLarge
from plinth.features.types import CommitInfo, ExpectationResult, FeatureGroup, ValidationReport

if TYPE_CHECKING:
    from plinth.features.service import FeatureService

logger = logging.getLogger("plinth.features.insert")


def _profile(
    group: FeatureGroup, version: int, table: pa.Table, features: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The commit's profile, or the failure that leaves it without one: the commit is made,
    so it is recorded either way (its drift verdict then names the failure)."""
    from plinth.features.drift import profile_of

    try:
        return profile_of(table, features), None
    except Exception as exc:
        logger.exception("profiling commit %s of %s failed", version, group.ref)
        return None, {"reference": None, "error": f"profiling the insert failed: {exc}"}


def record(
    service: FeatureService,
    group: FeatureGroup,
    version: int,
    table: pa.Table,
    results: list[ExpectationResult],
    at: datetime | None = None,
) -> CommitInfo:
    """Record Delta commit ``version`` of ``group`` holding ``table``: statistics, the
    profile the service checks for drift, and the validation report when the group has
    expectations. The service records the caller as the commit's writer."""
    from plinth.features.statistics import compute

    passed = all(r.passed for r in results)
    features = [f.name for f in group.features]
    stats = compute(table, features)
    profiled, failure = _profile(group, version, table, features)
    commit = CommitInfo(
        group.name,
        group.version,
        version,
        table.num_rows,
        "upsert",
        "",  # the service's caller
        at or datetime.now(UTC),
        passed,
        stats,
        profile=profiled,
        drift=failure,
    )
    report = None
    if results:
        report = ValidationReport(
            group.name,
            group.version,
            group.validation_mode,
            passed,
            table.num_rows,
            results,
            version,
        )
    try:
        return service.record_commit(group.name, commit, report)
    except PayloadTooLarge as exc:
        if commit.profile is None:
            raise
        # a server with a small request limit: the commit is recorded all the same
        logger.warning("commit %s of %s recorded without its profile: %s", version, group.ref, exc)
        failure = {"reference": None, "error": f"the profile was not sent: {exc}"}
        return service.record_commit(
            group.name, replace(commit, profile=None, drift=failure), report
        )
    except InvalidArgument as exc:
        if commit.profile is None:
            raise
        # the commit is made: recorded without a profile the service would not take
        logger.warning("commit %s of %s recorded without its profile: %s", version, group.ref, exc)
        failure = {"reference": None, "error": f"the profile was refused: {exc}"}
        return service.record_commit(
            group.name, replace(commit, profile=None, drift=failure), report
        )

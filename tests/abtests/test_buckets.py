"""Assignment: reproducible, uniform, sticky, and moving only whom it must."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from plinth.abtests.buckets import BUCKETS, Allocation, allocate, bucket, shares_to_counts
from plinth.errors import InvalidArgument


def test_the_bucket_is_the_documented_function() -> None:
    digest = hashlib.sha1(b"exp-salt:user-42").digest()
    assert bucket("exp-salt", "user-42") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket("exp-salt", "user-42") == bucket("exp-salt", "user-42")
    assert bucket("other-salt", "user-42") != bucket("exp-salt", "user-42")


def test_buckets_are_uniform_over_a_million_ids() -> None:
    counts = np.bincount([bucket("s", str(i)) % 100 for i in range(1_000_000)], minlength=100)
    assert stats.chisquare(counts).pvalue > 0.001


def test_shares_become_exact_counts() -> None:
    assert shares_to_counts({"a": 0.5, "b": 0.5}) == {"a": 5000, "b": 5000}
    assert sum(shares_to_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}).values()) == BUCKETS
    assert shares_to_counts({"a": 0.05, "b": 0.05}) == {"a": 500, "b": 500}
    for bad in ({"a": 0.7, "b": 0.7}, {"a": -0.1}, {}):
        with pytest.raises(InvalidArgument):
            shares_to_counts(bad)


def test_raising_an_arms_share_moves_only_the_users_it_must() -> None:
    before = allocate({"control": 0.9, "treatment": 0.1})
    after = allocate({"control": 0.8, "treatment": 0.2}, before)
    old, new = before.owners(), after.owners()
    moved = [i for i in range(BUCKETS) if old[i] != new[i]]
    assert len(moved) == 1000  # exactly the 10 % that changed hands
    assert all(old[i] == "control" and new[i] == "treatment" for i in moved)
    assert after.counts() == {"control": 8000, "treatment": 2000}


def test_an_allocation_round_trips_and_answers_by_bucket() -> None:
    made = allocate({"a": 0.25, "b": 0.25})
    assert made.counts() == {"a": 2500, "b": 2500}
    assert made.arm_for(0) == "a" and made.arm_for(2500) == "b" and made.arm_for(9999) is None
    again = Allocation({k: [tuple(s) for s in v] for k, v in made.ranges.items()})  # type: ignore[misc]
    assert again == made


def test_an_arm_that_leaves_frees_its_buckets() -> None:
    three = allocate({"a": 0.4, "b": 0.3, "c": 0.3})
    two = allocate({"a": 0.5, "b": 0.5}, three)
    old, new = three.owners(), two.owners()
    assert all(new[i] == "a" for i in range(BUCKETS) if old[i] == "a")
    assert all(new[i] == "b" for i in range(BUCKETS) if old[i] == "b")


_ROUTER = """
import json
from plinth.abtests.buckets import bucket
print(json.dumps([bucket("exp-7", f"user-{i}") for i in range(10_000)]))
"""


def _buckets_in_a_fresh_process(hash_seed: str) -> list[int]:
    src = Path(__file__).resolve().parents[2] / "src"
    # a different PYTHONHASHSEED each: the buckets must not lean on Python's own hash()
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", _ROUTER], env=env, capture_output=True, text=True, check=True
    )
    buckets: list[int] = json.loads(done.stdout)
    return buckets


def test_identical_across_two_router_processes() -> None:
    first, second = _buckets_in_a_fresh_process("1"), _buckets_in_a_fresh_process("2")
    assert len(first) == 10_000
    assert first == second
    assert first == [bucket("exp-7", f"user-{i}") for i in range(10_000)]


@pytest.mark.parametrize(
    ("unit", "said"),
    [
        ("", "non-empty text"),
        (7, "non-empty text"),
        ("x" * 501, "at most 500 characters, got 501"),
        ("bad\ud800", "lone surrogate"),
    ],
)
def test_a_unit_id_is_checked_naming_where_it_came_from(unit: object, said: str) -> None:
    from plinth.abtests.buckets import check_unit_id

    with pytest.raises(InvalidArgument, match=rf"^x-plinth-unit: .*{said}"):
        check_unit_id(unit, "x-plinth-unit")  # type: ignore[arg-type]
    assert check_unit_id("user-42") == "user-42" and check_unit_id("é" * 500) == "é" * 500

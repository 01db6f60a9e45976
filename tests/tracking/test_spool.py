"""The local spool of metric points, without a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.tracking import spool as spool_module
from plinth.tracking.spool import Orphan, Spool, orphans, read_points, replay
from plinth.tracking.types import MetricBatch

RUN = "r" * 32


def test_points_come_back_in_order_with_their_marks(tmp_path: Path) -> None:
    spool = Spool(tmp_path, RUN, "sqlite:///x.db")
    spool.append("loss", 0.5, 0, 1000, None)
    spool.append("précision", float("nan"), 7, 2000, True)
    spool.append("loss", -1e300, -3, 3000, False)
    first, points = read_points(spool.folder)
    assert first == 0 and len(points) == 3
    assert points[0] == ("loss", 0.5, 0, 1000, None)
    assert points[1][0] == "précision" and points[1][1] != points[1][1] and points[1][4] is True
    assert points[2] == ("loss", -1e300, -3, 3000, False)


def test_a_record_cut_short_by_a_kill_is_left_out(tmp_path: Path) -> None:
    spool = Spool(tmp_path, RUN, "t")
    for step in range(3):
        spool.append("loss", 1.0, step, 0, None)
    [segment] = spool.folder.glob("*.seg")
    data = segment.read_bytes()
    for cut in (1, 5, 25):
        segment.write_bytes(data[:-cut])
        assert [p[2] for p in read_points(spool.folder)[1]] == [0, 1]


def test_written_segments_are_deleted_the_rest_replayed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 100)  # 28-byte records: 4 a segment
    spool = Spool(tmp_path, RUN, "t")
    for step in range(10):
        spool.append("m", float(step), step, 0, None)
    assert len(list(spool.folder.glob("*.seg"))) == 3
    spool.written(6)  # the store holds points 0-5: only the first segment is all written
    first, points = read_points(spool.folder)
    assert first == 4 and [p[2] for p in points] == [4, 5, 6, 7, 8, 9]
    spool.close(remove=False)

    sent: list[MetricBatch] = []
    [orphan] = orphans(tmp_path, "t")
    assert orphan == Orphan(RUN, spool.folder)
    assert orphans(tmp_path, "another store") == []
    # From the segment's start: the store skips what its progress mark says it holds.
    assert replay(orphan, lambda run, batch: sent.append(batch)) == 6
    assert [(b.spool, b.first_seq, b.steps) for b in sent] == [(spool.id, 4, [4, 5, 6, 7, 8, 9])]
    assert not spool.folder.exists() and not (tmp_path / RUN).exists()


def test_a_live_spool_is_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, RUN, "t")
    spool.append("m", 1.0, 0, 0, None)
    [orphan] = orphans(tmp_path, "t")
    assert replay(orphan, lambda run, batch: pytest.fail("replayed a live spool")) is None
    assert spool.folder.exists()
    spool.close(remove=True)
    assert not (tmp_path / RUN).exists()


def test_goals_travel_with_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, RUN, "t")
    spool.set_goal("score", "min")
    spool.append("score", 1.0, 0, 0, None)
    spool.close(remove=False)
    sent: list[MetricBatch] = []
    replay(orphans(tmp_path, "t")[0], lambda run, batch: sent.append(batch))
    assert sent[0].goals == {"score": "min"}

"""Ending score jobs whose run died: a job left RUNNING is DELIVERED when its commit is in
the output table (keeping the checks its run recorded before committing), FAILED when its
run's process is gone from this host. A run on another host is left RUNNING: only its own
host can tell whether it is alive (re-running the job, or reconciling there, ends it)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from plinth.errors import PlinthError
from plinth.serving.delivery import ScoreTable

if TYPE_CHECKING:
    from plinth.serving.jobs import ScoreJob, ScoreJobService


def reconcile_job(jobs: ScoreJobService, job: ScoreJob) -> ScoreJob:
    """``job`` as it truly stands (recorded so), or unchanged when it cannot be told."""
    if job.status != "RUNNING":
        return job
    try:
        delivered = ScoreTable(job.output).delivered(job.job_key)
    except PlinthError:  # the output cannot be read from here
        return job
    if delivered is not None:
        version, rows = delivered
        rows = job.rows if rows is None else rows
        return jobs.finish_score_job(job.job_key, "DELIVERED", rows, output_version=version)
    if job.host == socket.gethostname() and job.pid is not None and not _alive(job.pid):
        return jobs.finish_score_job(job.job_key, "FAILED")
    return job


def reconcile_jobs(jobs: ScoreJobService, listed: list[ScoreJob]) -> list[ScoreJob]:
    return [reconcile_job(jobs, job) for job in listed]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

"""``plinth score MODEL_URI``: batch scoring of a Parquet file or folder or a Delta table
(``--input``), or streaming scoring of the files dropped into a folder or the commits
added to a Delta table (``--follow``), into a score history Delta table. Registered by
``plinth.cli``."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    from plinth.serving.batch import ScoreOptions, ScoreResult
    from plinth.serving.checks import CheckResult
    from plinth.serving.follow import FollowEvent

_CHUNK_ROWS = 100_000  # plinth.serving.batch.CHUNK_ROWS, not imported so --help stays fast


def score(
    model_uri: Annotated[str, typer.Argument(help="e.g. models:/churn@production, models:/churn/3")],
    output: Annotated[str, typer.Option("--output", "-o", help="the score history Delta table (folder or URI)")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="a Parquet file or folder, or a Delta table")] = None,
    follow: Annotated[str | None, typer.Option("--follow", help="a folder: score each new Parquet file once; a Delta table: each new commit's rows")] = None,
    engine: Annotated[str, typer.Option(help="duckdb (in-process) or spark (on PLINTH_SPARK_MASTER)")] = "duckdb",
    timestamp_column: Annotated[str, typer.Option(help="input column of the as-of times for features")] = "event_timestamp",
    key: Annotated[list[str] | None, typer.Option("--key", help="input column(s) copied to the scores to identify each row; repeat for several (default: the view's entity keys; for a plain model the input's columns that are entity join keys; else a row number)")] = None,
    job_key: Annotated[str | None, typer.Option(help="the job's idempotence key (default: a hash of model, input and output)")] = None,
    allow_failed_checks: Annotated[bool, typer.Option("--allow-failed-checks", help="deliver even if checks fail (recorded as failed)")] = False,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="NAME=VALUE, e.g. max_psi=0.3 (see plinth.serving.checks.Thresholds)")] = None,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="add a proba_<class> column per class")] = False,
    chunk_rows: Annotated[int, typer.Option(help="rows scored at a time (bounds memory)")] = _CHUNK_ROWS,
    threads: Annotated[int, typer.Option(help="chunks scored at once (0: one per CPU; one for pyfunc models)")] = 0,
    sql_uri: Annotated[str | None, typer.Option(help="also copy the scores to this SQLAlchemy database (with --sql-table)")] = None,
    sql_table: Annotated[str | None, typer.Option(help="the SQL table for the copy (created if missing)")] = None,
    poll_seconds: Annotated[float, typer.Option(help="with --follow: seconds between looks at the folder")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="with --follow: score what is there, then exit")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (one line per file with --follow).")] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="load a pickled model package (a pyfunc model): unpickling runs code from whoever registered it (default: the store's policy, PLINTH_TRUST_PICKLE)")] = False,
) -> None:  # fmt: skip
    """Score rows with a model version into a score history Delta table, exactly once.

    Failed checks (distribution, bad values, input ranges, unseen categories) deliver nothing.
    """
    from plinth.serving.batch import ScoreOptions
    from plinth.serving.checks import Thresholds

    if (input is None) == (follow is None):
        raise InvalidArgument("give exactly one of --input SOURCE and --follow FOLDER")
    if input is not None and once:
        raise InvalidArgument("--once goes with --follow; a job with --input always ends")
    if follow is not None and job_key is not None:
        raise InvalidArgument("--job-key goes with --input; with --follow each file is a job")
    options = ScoreOptions(
        engine,
        timestamp_column,
        tuple(key or ()),
        allow_failed_checks,
        chunk_rows,
        probabilities,
        Thresholds.parse(threshold or []),
        threads,
        sql_uri,
        sql_table,
        trust_pickle,
    )
    if input is not None:
        _batch(model_uri, input, output, options, job_key, json_)
    else:
        assert follow is not None
        _follow(model_uri, follow, output, options, poll_seconds, once, json_)


def _batch(
    model_uri: str, input: str, output: str, options: ScoreOptions, job_key: str | None, json_: bool
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from plinth.cli.common import _client, _print_json, err
    from plinth.serving.batch import Scorer
    from plinth.serving.model import load_served
    from plinth.serving.sources import open_source

    client = _client()
    served = load_served(client, model_uri, trust_pickle=options.trust_pickle)
    source = open_source(input)
    scorer = Scorer(client, served, output, options)
    key = job_key if job_key is not None else scorer.default_key(source)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # on stderr, so --json stays clean; only on a terminal, so logs get no bar debris
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"scoring with {served.name} v{served.version.version}")
        result = scorer.run(
            source, key, {}, lambda done, total: bar.update(task, completed=done, total=total)
        )
    if json_:
        return _print_json(result)
    _report(result, options.sql_table)


def _report(result: ScoreResult, sql_table: str | None = None) -> None:
    from rich.markup import escape

    from plinth.cli.common import _table, err, out

    where = f"{escape(result.output)} (Delta version {result.output_version})"
    model = f"{result.model_name} v{result.model_version}"
    if result.already_delivered:
        out.print(
            f"job {result.job_key} was already delivered to {where}: {result.rows} row(s); "
            "nothing scored again",
            soft_wrap=True,
        )
    elif result.output_version is None:
        out.print(f"{escape(result.input)} has no rows: nothing delivered", soft_wrap=True)
    else:
        out.print(
            f"scored {result.rows} row(s) of {escape(result.input)} with {model} into {where}, "
            f"job {result.job_key}",
            soft_wrap=True,
        )
    if result.sql_rows:
        out.print(f"copied {result.sql_rows} row(s) to SQL table {sql_table}", soft_wrap=True)
    if result.checks:
        rows = [(c.name, _verdict(c), c.detail) for c in result.checks]
        out.print(_table("checks", ("check", "result", "detail"), rows))
    if not result.checks_passed:
        failed = ", ".join(c.name for c in result.checks if not c.passed)
        err.print(f"warning: delivered although checks failed: {failed}", soft_wrap=True)


def _verdict(check: CheckResult) -> str:
    return "skipped" if check.skipped else "passed" if check.passed else "FAILED"


def _follow(
    model_uri: str,
    folder: str,
    output: str,
    options: ScoreOptions,
    poll_seconds: float,
    once: bool,
    json_: bool,
) -> None:
    from plinth.cli.common import _client
    from plinth.serving.follow import follow

    stop = threading.Event()
    failures = []

    def on_event(event: FollowEvent) -> None:
        if event.error is not None:
            failures.append(event)
        _say_event(event, json_)

    # SIGTERM stops between files: the file being scored is committed or not at all
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        follow(
            _client(),
            model_uri,
            folder,
            output,
            options,
            poll_seconds=poll_seconds,
            once=once,
            stop=stop,
            on_event=on_event,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if once and failures:
        sys.exit(1)


def _say_event(event: FollowEvent, json_: bool) -> None:
    from rich.markup import escape

    from plinth.cli.common import _plain, err, out

    if json_:
        payload: dict[str, Any] = {"file": event.file, "result": _plain(event.result)}
        if event.error is not None:
            payload["error"] = event.error.to_dict()
        sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
        sys.stdout.flush()
    elif event.error is not None:
        message = f"[red]not delivered[/red] {escape(event.file)}: {escape(event.error.message)}"
        err.print(message, highlight=False, soft_wrap=True)
    elif event.result is not None:
        r = event.result
        out.print(
            f"scored {escape(event.file)}: {r.rows} row(s) with {r.model_name} "
            f"v{r.model_version} into Delta version {r.output_version}",
            soft_wrap=True,
        )


def score_jobs(
    model: Annotated[str | None, typer.Option("--model", help="only this model's jobs")] = None,
    limit: Annotated[int, typer.Option(help="how many, latest first")] = 20,
    job: Annotated[str | None, typer.Option("--job", help="one job, with its checks")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The recorded batch scoring jobs: status, rows, the Delta version delivered, checks.
    A RUNNING job whose commit is in its output is shown (and recorded) DELIVERED; one whose
    process on this host is gone, FAILED."""
    from plinth.cli.common import _client, _print_json, _table, out
    from plinth.serving.reconcile import reconcile_job, reconcile_jobs

    jobs = _client().score_jobs
    if job is not None:
        found = reconcile_job(jobs, jobs.get_score_job(job))
        if json_:
            return _print_json(found)
        out.print(_table("score job", ("field", "value"), _fields(found)))
        rows = [(c.name, _verdict(c), c.detail) for c in found.checks]
        out.print(_table("checks", ("check", "result", "detail"), rows))
        return None
    listed = reconcile_jobs(jobs, jobs.list_score_jobs(model, limit))
    if json_:
        return _print_json(listed)
    table: list[tuple[Any, ...]] = [
        (j.job_key, f"{j.model_name} v{j.model_version}", j.status, j.rows, j.output_version,
         sum(not c.passed for c in j.checks), j.output)
        for j in listed
    ]  # fmt: skip
    columns = ("job", "model", "status", "rows", "delta version", "failed checks", "output")
    out.print(_table("score jobs", columns, table))
    return None


def _fields(job: Any) -> list[tuple[str, Any]]:
    from dataclasses import fields

    return [(f.name, getattr(job, f.name)) for f in fields(job) if f.name != "checks"]

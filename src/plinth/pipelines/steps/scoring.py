"""Ready-made scoring steps: a batch score job with checks, and delivery of its rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument
from plinth.pipelines.step import Step
from plinth.pipelines.steps.base import jsonable, make_step, record

if TYPE_CHECKING:
    import pyarrow as pa

    from plinth.pipelines.context import StepContext
    from plinth.serving.checks import Thresholds


def batch_score(
    input: Any,
    output: str,
    *,
    model: Any,
    engine: str = "duckdb",
    keys: Sequence[str] = (),
    timestamp_column: str = "event_timestamp",
    thresholds: Thresholds | None = None,
    probabilities: bool = False,
    allow_failed_checks: bool = False,
    trust_pickle: bool = False,
    name: str = "batch_score",
    timeout_seconds: float | None = None,
) -> Step:
    """Score ``input`` (a Parquet or Delta path, or a callable of the context giving one)
    into the score history Delta table ``output`` as a score job keyed by
    ``context.key()`` (a retried run delivers once). ``model`` is a model URI
    (``models:/churn@production``) or the name of an earlier step giving a ModelVersion or
    a Decision (then the PRODUCTION version after it). The checks run before the commit:
    failing ones fail the step and deliver nothing (unless ``allow_failed_checks``)."""
    if isinstance(input, str) or not callable(input):
        path = input
        input = lambda context: path  # noqa: E731 - a path, not an earlier step's name
    uri = model if isinstance(model, str) and ":/" in model else None
    reads = {"input": input, "model": (lambda context: uri) if uri else model}

    def body(context: StepContext, values: dict[str, Any]) -> dict[str, Any]:
        from plinth.serving.batch import score

        result = score(
            context.client,
            _model_uri(values["model"]),
            values["input"],
            output,
            engine=engine,
            timestamp_column=timestamp_column,
            keys=list(keys),
            job_key=context.key(),
            allow_failed_checks=allow_failed_checks,
            probabilities=probabilities,
            thresholds=thresholds,
            trust_pickle=trust_pickle,
        )
        context.run.set_tags({"plinth.score_job": result.job_key})
        passed = sum(c.passed for c in result.checks)
        record(context, {"model": f"{result.model_name}/{result.model_version}"}, {
            "rows": result.rows, "checks_passed": passed, "checks_failed": len(result.checks) - passed,
        })  # fmt: skip
        return jsonable(asdict(result))

    config = {"output": output, "engine": engine, "keys": list(keys), "model": model}
    return make_step(name, body, reads, config, timeout_seconds)


def _model_uri(model: Any) -> str:
    from plinth.registry.types import Decision, ModelVersion

    if isinstance(model, str):
        return model
    if isinstance(model, ModelVersion):
        return model.uri
    if isinstance(model, Decision):
        return f"models:/{model.model_name}@production"
    raise InvalidArgument(
        f"model must be a model URI, a ModelVersion or a Decision, not {type(model).__name__}"
    )


def deliver(
    scores: Any = "batch_score",
    *,
    sql_uri: str | None = None,
    sql_table: str | None = None,
    to: Callable[[pa.Table, str], Any] | None = None,
    name: str = "deliver",
    timeout_seconds: float | None = None,
) -> Step:
    """Hand a delivered score job's rows on: to the SQL table ``sql_table`` of
    ``sql_uri`` (exactly once: a marker row per job key, ``plinth.serving.sqlout``), or to
    ``to(rows, job_key)`` (called with the job's rows read back from its commit; make it
    idempotent by the job key, as a retried run calls it again)."""
    if (sql_uri is None) != (sql_table is None) or (sql_uri is None) == (to is None):
        raise InvalidArgument("deliver needs either sql_uri and sql_table, or to=callable")

    def body(context: StepContext, values: dict[str, Any]) -> dict[str, Any]:
        import pyarrow.compute as pc

        from plinth.serving.sources import delta_table

        job = values["scores"]
        key, version = job["job_key"], job["output_version"]
        rows = 0
        if version is not None:
            dataset = delta_table(job["output"], version).to_pyarrow_dataset()
            wanted = pc.field("job_key") == key
            if sql_uri is not None and sql_table is not None:
                from plinth.serving.sqlout import SqlScores

                target = SqlScores(sql_uri, sql_table)
                if not target.copied(key):
                    rows = target.copy(key, dataset.schema, iter(dataset.to_batches(filter=wanted)))
            elif to is not None:
                table = dataset.to_table(filter=wanted)
                to(table, key)
                rows = table.num_rows
        record(context, {}, {"rows": rows})
        return {"job_key": key, "rows": rows, "target": sql_table or getattr(to, "__name__", "to")}

    config = {"sql_uri": sql_uri, "sql_table": sql_table, "to": to}
    return make_step(name, body, {"scores": scores}, config, timeout_seconds)

"""Ready-made data steps: a training dataset from a feature view, and its validation
(expectations, drift against the last training data)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument
from plinth.pipelines.step import Step
from plinth.pipelines.steps.base import ValidationFailed, as_table, jsonable, make_step, record

if TYPE_CHECKING:
    import pyarrow as pa

    from plinth.client import Client
    from plinth.features.datasets import TrainingData
    from plinth.features.types import Expectation
    from plinth.pipelines.context import StepContext


def training_data(
    view: Any,
    spine: Any,
    *,
    name: str = "training_data",
    timestamp_column: str = "event_timestamp",
    engine: str = "duckdb",
    description: str = "",
    timeout_seconds: float | None = None,
) -> Step:
    """A training dataset of feature ``view`` (its name, or the view) over ``spine``: the
    entity keys, the time of each row (point-in-time correct features as of then) and the
    label. The snapshot is recorded in the feature store and as the tracking run's input;
    the output is the ``TrainingData``. ``engine="spark"`` joins on Spark."""
    if engine not in ("duckdb", "spark"):
        raise InvalidArgument(f"engine must be 'duckdb' or 'spark', not {engine!r}")

    def body(context: StepContext, values: dict[str, Any]) -> TrainingData:
        made = context.client.feature_store().create_training_dataset(
            view,
            values["spine"],
            timestamp_column=timestamp_column,
            description=description or f"pipeline {context.pipeline} run {context.pipeline_run}",
            engine=engine,
        )
        context.run.log_input(made)
        info = made.info
        record(
            context,
            {"view": info.view, "view_version": info.view_version, "dataset": info.id},
            {"rows": info.rows},
        )
        return made

    config = {"view": view, "timestamp_column": timestamp_column, "engine": engine}
    return make_step(name, body, {"spine": spine}, config, timeout_seconds)


def validate_data(
    data: Any = "training_data",
    *,
    expectations: Sequence[Expectation] = (),
    model: str | None = None,
    reference: Any = None,
    max_drifted_share: float | None = None,
    columns: Sequence[str] | None = None,
    preset: str = "plinth",
    name: str = "validate_data",
    timeout_seconds: float | None = None,
) -> Step:
    """Check ``data`` (a TrainingData, an Arrow table or a DataFrame) against
    ``expectations`` (the feature store's rules: ``plinth.Expectation``) and for drift
    against the last training data: ``reference`` when given, else the training data of
    ``model``'s PRODUCTION version (its stored profile), else the newest earlier training
    dataset of the same feature view. The step fails (``ValidationFailed``) when an
    expectation fails, or when the share of drifted columns reaches
    ``max_drifted_share`` (None: drift is measured and reported, not judged). The report
    is logged as ``reports/<step>.json``."""
    from plinth.features.validation import check_expectation

    for expectation in expectations:
        check_expectation(expectation)
    if max_drifted_share is not None and not 0 < max_drifted_share <= 1:
        raise InvalidArgument(f"max_drifted_share must be in (0, 1], not {max_drifted_share}")

    def body(context: StepContext, values: dict[str, Any]) -> dict[str, Any]:
        from plinth.features.validation import validate
        from plinth.stats.drift import drift_report

        current = as_table(values["data"])
        results = validate(current, list(expectations))
        failures = [
            f"{r.expectation.kind} {r.expectation.column or ','.join(r.expectation.columns)}: {r.detail}"
            for r in results
            if not r.passed
        ]
        report: dict[str, Any] = {
            "rows": current.num_rows,
            "expectations": [asdict(r) for r in results],
        }
        found, source = _drift_reference(context.client, values["data"], values["reference"], model)
        drifted_share = None
        if found is None:
            report["drift"] = {"skipped": source}
        else:
            compared = _compared_columns(context.client, values["data"], current, columns)
            drift = drift_report(
                found, current, preset=preset, columns=compared, share_threshold=max_drifted_share
            )
            report["drift"] = {"reference": source, **drift.to_dict()}
            drifted_share = drift.drifted_share
            if max_drifted_share is not None and drift.dataset_drifted:
                drifted = ", ".join(c.column for c in drift.columns if c.drifted)
                failures.append(f"drift against {source}: {drift.summary()} ({drifted})")
        report["failures"] = failures
        context.run.log_dict(jsonable(report), f"reports/{context.step}.json")
        record(
            context,
            {},
            {
                "rows": current.num_rows,
                "failed_expectations": sum(not r.passed for r in results),
                "drifted_share": drifted_share,
            },
        )
        if failures:
            raise ValidationFailed(
                f"step {context.step}: the data failed validation: " + "; ".join(failures), report
            )
        return {"rows": current.num_rows, "drift": source, "drifted_share": drifted_share}

    config = {
        "expectations": [asdict(e) for e in expectations],
        "model": model,
        "max_drifted_share": max_drifted_share,
        "columns": list(columns or []),
        "preset": preset,
    }
    return make_step(name, body, {"data": data, "reference": reference}, config, timeout_seconds)


def _drift_reference(
    client: Client, data: Any, reference: Any, model: str | None
) -> tuple[Any, str]:
    """What to test drift against (a profile or a table) and what it is; (None, why) when
    there is nothing to compare with."""
    if reference is not None:
        return (reference.to_arrow() if hasattr(reference, "to_arrow") else reference), "reference"
    if model is not None:
        champion = client._production_or_none(model)
        linked = champion.lineage.get("training_datasets") if champion else None
        if champion is not None and linked:
            what = f"the training data of {champion.uri}"
            if not client.remote:  # the stored profile the monitors compare with too
                found = client.monitoring.reference(champion)
                if not isinstance(found, str):
                    return found.profile, what
            return client.feature_store().get_training_dataset(int(linked[0])).to_arrow(), what
    info = getattr(data, "info", None)
    if info is not None:
        earlier = [
            d for d in client.features.list_training_datasets(view=info.view) if d.id < info.id
        ]
        if earlier:
            last = earlier[-1]
            rows = client.feature_store().get_training_dataset(last.id).to_arrow()
            return rows, f"training dataset {last.id} ({last.view}:v{last.view_version})"
    return None, "no earlier training data to compare with"


def _compared_columns(
    client: Client, data: Any, current: pa.Table, columns: Sequence[str] | None
) -> list[str] | None:
    if columns:
        return list(columns)
    info = getattr(data, "info", None)
    if info is None:
        return None
    view = client.features.get_feature_view(info.view, info.view_version)
    return [c for c in view.output_names if c in current.column_names]

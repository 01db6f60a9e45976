"""Ready-made steps for the common path: training data from a feature view, data
validation, train, model validation, register, champion/challenger, batch score, deliver.

Each factory returns a ``Step`` for a ``plinth.Pipeline``; a user's own ``@plinth.step``
slots in anywhere. A step reads the outputs of earlier steps by name: an argument given
as a string names the earlier step (or run param) whose output it takes (``data=
"training_data"``, ``model="train"``); a callable is called with the ``StepContext`` when
the step runs; anything else is used as it is. Every step records what it did on the
pipeline's tracking run (params in a group named after the step, metrics prefixed with
it, reports as artifacts under ``reports/``), and the steps with side effects key them
by ``context.key()``, so a retried run registers, promotes and delivers once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from plinth.errors import Conflict, InvalidArgument
from plinth.pipelines.step import CONTEXT, Step

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import pyarrow as pa

    from plinth.client import Client
    from plinth.features.datasets import TrainingData
    from plinth.features.types import Expectation
    from plinth.pipelines.context import StepContext
    from plinth.registry.predictor import Predictor
    from plinth.registry.types import Decision, ModelVersion
    from plinth.serving.checks import Thresholds


class ValidationFailed(Conflict):
    """A validation step refused what it checked (data expectations, drift, model
    gates): the step fails, so nothing after it runs. ``report`` holds every result."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


Body = Callable[["StepContext", dict[str, Any]], Any]


def _step(
    name: str,
    body: Body,
    reads: dict[str, Any],
    config: dict[str, Any],
    timeout_seconds: float | None = None,
) -> Step:
    """A Step called ``name`` running ``body(context, values)``; ``values`` holds each of
    ``reads`` resolved: a string is an input of that name (an earlier step's output or a
    run param), a callable is called with the context, anything else is itself."""
    wired = list(dict.fromkeys(v for v in reads.values() if isinstance(v, str)))
    for source in wired:
        if not source.isidentifier() or source == CONTEXT:
            raise InvalidArgument(
                f"step {name!r}: {source!r} names no step or run param (a Python identifier "
                f"other than {CONTEXT!r}); pass the value itself or a callable of the context"
            )

    def run(context: StepContext, **inputs: Any) -> Any:
        values = {
            role: inputs[v] if isinstance(v, str) else v(context) if _is_getter(v) else v
            for role, v in reads.items()
        }
        return body(context, values)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, kind) for p in (CONTEXT, *wired)]
    )
    made = Step(run, name=name, timeout_seconds=timeout_seconds)
    # the factory's body and its configuration are the code: cached outputs follow both
    text = inspect.getsource(body) + json.dumps(
        {k: _describe(v) for k, v in config.items()}, sort_keys=True
    )
    made.__dict__["code_version"] = hashlib.sha256(text.encode()).hexdigest()
    return made


def _is_getter(value: Any) -> bool:
    return callable(value) and not hasattr(value, "fit") and not isinstance(value, type)


def _describe(value: Any) -> Any:
    if callable(value) and not hasattr(value, "fit"):
        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return getattr(value, "__qualname__", type(value).__name__)
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    return f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"[:2000]


def _log(context: StepContext, params: dict[str, Any], metrics: dict[str, float | None]) -> None:
    if params:
        context.run.log_params(params, group=context.step)
    finite = {f"{context.step}/{k}": float(v) for k, v in metrics.items() if v is not None}
    if finite:
        context.run.log_metrics(finite)


def _jsonable(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(json.dumps(value, default=_plain))
    return found


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


# -- data ------------------------------------------------------------------------------


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
        _log(
            context,
            {"view": info.view, "view_version": info.view_version, "dataset": info.id},
            {"rows": info.rows},
        )
        return made

    config = {"view": view, "timestamp_column": timestamp_column, "engine": engine}
    return _step(name, body, {"spine": spine}, config, timeout_seconds)


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

        current = _table(values["data"])
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
        context.run.log_dict(_jsonable(report), f"reports/{context.step}.json")
        _log(
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
    return _step(name, body, {"data": data, "reference": reference}, config, timeout_seconds)


def _table(data: Any) -> pa.Table:
    import pyarrow as pa

    if hasattr(data, "info") and hasattr(data, "to_arrow"):  # TrainingData
        return data.to_arrow()
    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidArgument(
        f"expected training data, an Arrow table or a DataFrame, not {type(data).__name__}"
    )


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


# -- models ----------------------------------------------------------------------------


def train(
    fit: Any,
    *,
    label: str | None = None,
    data: Any = "training_data",
    features: Sequence[str] | None = None,
    name: str = "train",
    artifact_path: str = "model",
    timeout_seconds: float | None = None,
) -> Step:
    """Fit a model on ``data`` and log it into the tracking run (with its signature, from
    the first rows). ``fit`` is an estimator (a fresh clone is fitted each run) or a
    callable ``fit(X, y) -> model``. ``label`` defaults to the training data's; the
    features to the feature view's outputs (else every other column). The output names
    where the model is: ``{"run_id", "artifact_path", "uri", "features", "label", ...}``."""
    if not (hasattr(fit, "fit") or callable(fit)):
        raise InvalidArgument(
            f"fit must be an estimator or a callable fit(X, y) -> model, not {type(fit).__name__}"
        )

    def body(context: StepContext, values: dict[str, Any]) -> dict[str, Any]:
        X, y, target, dataset = _features_and_label(context.client, values["data"], label, features)
        model = _fitted(fit, X, y)
        run = context.run
        if dataset is not None:
            run.log_input(dataset)  # a version registered from this run links to it
        estimator = type(model).__name__
        _log(
            context,
            {"estimator": estimator, "label": target, "features": list(X.columns)},
            {"rows": len(X)},
        )
        run.log_model(model, artifact_path, input_example=X.head(5))
        return {
            "run_id": run.id,
            "artifact_path": artifact_path,
            "uri": f"runs:/{run.id}/{artifact_path}",
            "estimator": estimator,
            "label": target,
            "features": list(X.columns),
            "training_dataset": dataset.id if dataset is not None else None,
        }

    config = {"fit": fit, "label": label, "features": list(features or []), "path": artifact_path}
    return _step(name, body, {"data": data}, config, timeout_seconds)


def _features_and_label(
    client: Client, data: Any, label: str | None, features: Sequence[str] | None
) -> tuple[pd.DataFrame, Any, str, TrainingData | None]:
    dataset = data if hasattr(data, "info") and hasattr(data, "to_pandas") else None
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1], label or "", None
    frame = _table(data).to_pandas()
    target = label or (dataset.info.label if dataset is not None else None)
    if not target or target not in frame.columns:
        raise InvalidArgument(
            f"the data has no label column {target!r}: pass label= one of {list(frame.columns)}"
        )
    if features:
        names = list(features)
    elif dataset is not None:
        view = client.features.get_feature_view(dataset.info.view, dataset.info.view_version)
        names = [c for c in view.output_names if c != target]
    else:
        names = [c for c in frame.columns if c != target]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise InvalidArgument(
            f"the data has no feature columns {missing}; it has {list(frame.columns)}"
        )
    return frame[names], frame[target], target, dataset


def _fitted(fit: Any, X: Any, y: Any) -> Any:
    if hasattr(fit, "fit"):
        try:
            from sklearn.base import clone  # type: ignore[import-untyped]

            estimator = clone(fit)
        except (ImportError, TypeError):  # not a scikit-learn estimator
            estimator = fit
        fitted = estimator.fit(X, y)
        return estimator if fitted is None else fitted
    model = fit(X, y)
    if model is None:
        raise InvalidArgument("fit(X, y) returned None: return the fitted model")
    return model


def validate_model(
    metric: str,
    *,
    holdout: Any,
    model: Any = "train",
    min_value: float | None = None,
    max_value: float | None = None,
    slices: Sequence[str] = (),
    max_slice_gap: float | None = None,
    trust_pickle: bool = False,
    name: str = "validate_model",
    timeout_seconds: float | None = None,
) -> Step:
    """Score the trained model on ``holdout`` (``(X, y)``, or a DataFrame holding the
    label; or the name of an earlier step giving one): ``metric`` (accuracy, auc, f1, rmse,
    mae, r2) overall and per value of each ``slices`` column. The step fails
    (``ValidationFailed``) below ``min_value``, above ``max_value``, or when the gap
    between the best and worst slice exceeds ``max_slice_gap``. Logged as metrics
    ``<step>/<metric>``, ``<step>/<metric>/<column>=<value>``, ``<step>/slice_gap`` and
    the report ``reports/<step>.json``."""
    from plinth.registry.scoring import score

    score(metric, lambda X: X, ([0, 1], [0, 1]))  # an unknown metric fails now

    def body(context: StepContext, values: dict[str, Any]) -> dict[str, Any]:
        trained = values["model"]
        frame, y = _holdout(values["holdout"], trained)
        predictor = context.client.load_model(trained["uri"], trust_pickle=trust_pickle)
        names = trained.get("features") or list(frame.columns)
        overall = _score(predictor, metric, frame[names], y)
        by_slice: dict[str, float] = {}
        for column in slices:
            if column not in frame.columns:
                raise InvalidArgument(f"the holdout has no slice column {column!r}")
            for value, index in frame.groupby(column, dropna=False).groups.items():
                part = frame.loc[index]
                by_slice[f"{column}={value}"] = _score(predictor, metric, part[names], y.loc[index])
        gap = max(by_slice.values()) - min(by_slice.values()) if by_slice else None
        failures = []
        if min_value is not None and overall < min_value:
            failures.append(f"{metric} {overall:.6g} is below {min_value}")
        if max_value is not None and overall > max_value:
            failures.append(f"{metric} {overall:.6g} is above {max_value}")
        if max_slice_gap is not None and gap is not None and gap > max_slice_gap:
            worst = min(by_slice, key=by_slice.__getitem__)
            failures.append(f"slice gap {gap:.6g} exceeds {max_slice_gap} (worst: {worst})")
        report = {
            "metric": metric,
            "value": overall,
            "rows": len(y),
            "slices": by_slice,
            "slice_gap": gap,
            "failures": failures,
        }
        context.run.log_dict(_jsonable(report), f"reports/{context.step}.json")
        slice_metrics = {f"{metric}/{k}": v for k, v in by_slice.items()}
        _log(context, {}, {metric: overall, "slice_gap": gap, **slice_metrics})
        if failures:
            raise ValidationFailed(
                f"step {context.step}: the model failed validation: " + "; ".join(failures),
                report,
            )
        return _jsonable(report)

    config = {
        "metric": metric,
        "min": min_value,
        "max": max_value,
        "slices": list(slices),
        "gap": max_slice_gap,
    }
    return _step(name, body, {"model": model, "holdout": holdout}, config, timeout_seconds)


def _holdout(holdout: Any, trained: dict[str, Any]) -> tuple[pd.DataFrame, Any]:
    import pandas as pd

    if isinstance(holdout, tuple) and len(holdout) == 2:
        return holdout[0], pd.Series(holdout[1], index=holdout[0].index)
    frame = _table(holdout).to_pandas()
    label = trained.get("label")
    if not label or label not in frame.columns:
        raise InvalidArgument(
            f"the holdout has no label column {label!r}: pass holdout=(X, y) or a table with it"
        )
    return frame, frame[label]


def _score(predictor: Predictor, metric: str, X: Any, y: Any) -> float:
    from plinth.registry.scoring import score

    wants_scores = metric.lower().endswith("auc") and hasattr(predictor.native, "predict_proba")
    return score(metric, predictor.predict_proba if wants_scores else predictor.predict, (X, y))


def register(
    model_name: str,
    *,
    model: Any = "train",
    description: str = "",
    tags: dict[str, str] | None = None,
    name: str = "register",
    timeout_seconds: float | None = None,
) -> Step:
    """Register the trained model as a version of ``model_name`` (linked to its run and
    training data), once: a retried run finds the version registered from the same run's
    package and returns it. The output is the ``ModelVersion``."""

    def body(context: StepContext, values: dict[str, Any]) -> ModelVersion:
        trained = values["model"]
        client = context.client
        version = client.registered_from_run(
            model_name, trained["run_id"], trained["artifact_path"]
        )
        if version is None:
            run = client.get_run(trained["run_id"])
            version = client.registry.create_model_version(
                model_name,
                f"{run.experiment_id}/{run.id}/artifacts/{trained['artifact_path']}",
                run.id,
                description,
                {**(tags or {}), "plinth.pipeline_run": str(context.pipeline_run)},
                trained.get("training_dataset"),
            )
        context.run.set_tags({"plinth.registered": f"{model_name}/{version.version}"})
        _log(context, {"model": model_name}, {"version": version.version})
        return version

    config = {"model_name": model_name, "description": description, "tags": tags}
    return _step(name, body, {"model": model}, config, timeout_seconds)


def champion_challenger(
    model_name: str,
    metric: str,
    *,
    direction: str = "max",
    holdout: Any = None,
    model: Any = "train",
    trust_pickle: bool = False,
    name: str = "champion_challenger",
    timeout_seconds: float | None = None,
) -> Step:
    """Adjudicate the trained model against ``model_name``'s PRODUCTION champion on the
    same ``holdout`` (else on the logged ``metric``): promoted through the gates only if
    better, the decision and its evidence recorded either way, with this pipeline run and
    the alert that triggered it (``Client.adjudicate``, keyed by ``context.key()``: a
    retried run decides once). The output is the ``Decision``."""
    if direction not in ("max", "min"):
        raise InvalidArgument(f"direction must be 'max' or 'min', not {direction!r}")

    def body(context: StepContext, values: dict[str, Any]) -> Decision:
        trained = values["model"]
        held = values["holdout"]
        if held is not None:
            frame, y = _holdout(held, trained)
            held = (frame[trained.get("features") or list(frame.columns)], y)
        decision = context.client.adjudicate(
            model_name,
            trained["run_id"],
            metric,
            direction,
            held,
            artifact_path=trained["artifact_path"],
            trust_pickle=trust_pickle,
            key=context.key(),
            pipeline_run=context.pipeline_run,
            alert_id=context.trigger.get("alert_id"),
        )
        context.run.set_tags(
            {"plinth.decision": decision.outcome, "plinth.decision_key": decision.key or ""}
        )
        scores = {
            "challenger_score": decision.challenger_score,
            "champion_score": decision.champion_score,
        }
        _log(context, {"model": model_name, "metric": metric, "direction": direction}, scores)
        context.log.info("%s: %s", decision.outcome, decision.reason)
        return decision

    config = {"model_name": model_name, "metric": metric, "direction": direction}
    return _step(name, body, {"model": model, "holdout": holdout}, config, timeout_seconds)


# -- scoring ---------------------------------------------------------------------------


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
        _log(context, {"model": f"{result.model_name}/{result.model_version}"}, {
            "rows": result.rows, "checks_passed": passed, "checks_failed": len(result.checks) - passed,
        })  # fmt: skip
        return _jsonable(asdict(result))

    config = {"output": output, "engine": engine, "keys": list(keys), "model": model}
    return _step(name, body, reads, config, timeout_seconds)


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
        _log(context, {}, {"rows": rows})
        return {"job_key": key, "rows": rows, "target": sql_table or getattr(to, "__name__", "to")}

    config = {"sql_uri": sql_uri, "sql_table": sql_table, "to": to}
    return _step(name, body, {"scores": scores}, config, timeout_seconds)

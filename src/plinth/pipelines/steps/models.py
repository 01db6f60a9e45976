"""Ready-made model steps: train, validate on a holdout (gates, slices), register once
per run, and champion/challenger."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument
from plinth.pipelines.step import Step
from plinth.pipelines.steps.base import ValidationFailed, as_table, jsonable, make_step, record

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import Client
    from plinth.features.datasets import TrainingData
    from plinth.pipelines.context import StepContext
    from plinth.registry.predictor import Predictor
    from plinth.registry.types import Decision, ModelVersion


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
        record(
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
    return make_step(name, body, {"data": data}, config, timeout_seconds)


def _features_and_label(
    client: Client, data: Any, label: str | None, features: Sequence[str] | None
) -> tuple[pd.DataFrame, Any, str, TrainingData | None]:
    dataset = data if hasattr(data, "info") and hasattr(data, "to_pandas") else None
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1], label or "", None
    frame = as_table(data).to_pandas()
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
        if not math.isfinite(overall):  # (NaN passes every comparison's "else")
            failures.append(f"{metric} is {overall}: it could not be measured on the holdout")
        if max_slice_gap is not None and gap is not None and not math.isfinite(gap):
            unmeasured = [k for k, v in by_slice.items() if not math.isfinite(v)]
            failures.append(f"{metric} could not be measured on slices {unmeasured}")
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
        context.run.log_dict(jsonable(report), f"reports/{context.step}.json")
        slice_metrics = {f"{metric}/{k}": v for k, v in by_slice.items()}
        record(context, {}, {metric: overall, "slice_gap": gap, **slice_metrics})
        if failures:
            raise ValidationFailed(
                f"step {context.step}: the model failed validation: " + "; ".join(failures),
                report,
            )
        return jsonable(report)

    config = {
        "metric": metric,
        "min": min_value,
        "max": max_value,
        "slices": list(slices),
        "gap": max_slice_gap,
    }
    return make_step(name, body, {"model": model, "holdout": holdout}, config, timeout_seconds)


def _holdout(holdout: Any, trained: dict[str, Any]) -> tuple[pd.DataFrame, Any]:
    import pandas as pd

    if isinstance(holdout, tuple) and len(holdout) == 2:
        import numpy as np

        frame, labels = holdout[0], np.asarray(holdout[1])
        if labels.ndim != 1 or len(labels) != len(frame):
            raise InvalidArgument(
                f"holdout=(X, y): y must hold one label per row of X ({len(frame)} rows), "
                f"got shape {labels.shape}"
            )
        # by position: a label Series indexed unlike X must not be aligned on its index
        return frame, pd.Series(labels, index=frame.index)
    frame = as_table(holdout).to_pandas()
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
        context.run.flush()  # the version's lineage snapshots the run's metrics as stored
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
        record(context, {"model": model_name}, {"version": version.version})
        return version

    config = {"model_name": model_name, "description": description, "tags": tags}
    return make_step(name, body, {"model": model}, config, timeout_seconds)


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
        # a version registered here snapshots the run's metrics as stored, and the gates
        # read that snapshot: what earlier steps logged must be in it
        context.run.flush()
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
        record(context, {"model": model_name, "metric": metric, "direction": direction}, scores)
        context.log.info("%s: %s", decision.outcome, decision.reason)
        return decision

    config = {"model_name": model_name, "metric": metric, "direction": direction}
    return make_step(name, body, {"model": model, "holdout": holdout}, config, timeout_seconds)

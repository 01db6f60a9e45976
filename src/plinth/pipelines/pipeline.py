"""``plinth.Pipeline``: steps in order, wired by parameter name, checked when built.

Light on purpose (``import plinth`` imports this); running loads ``runner``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument
from plinth.pipelines.step import CONTEXT, Step

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.pipelines.types import PipelineRun


@dataclass(frozen=True)
class Input:
    """Where one parameter of a step gets its value: ``context``, ``step`` (an earlier
    step's output) or ``param`` (a run param, else the step's default)."""

    source: str
    name: str


class PipelineFailed(Exception):
    """``Pipeline.run`` found its run failed; ``run`` holds it, steps and tracebacks."""

    def __init__(self, run: PipelineRun) -> None:
        super().__init__(f"pipeline {run.pipeline!r} run {run.id} {run.status}: {run.error}")
        self.run = run


class Pipeline:
    """Steps run in list order; each may use the outputs of steps before it.

    ``name``: as a registered pipeline's (letters, digits, ``_``, ``-``, ``.``); running
    a registered one in process needs the WRITE permission on it.

    ``params``: the run params' defaults (a run can change them and add its own; every
    step sees them all as ``context.params``). ``experiment``: where its tracking runs go
    (default: the pipeline's name)."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        params: dict[str, Any] | None = None,
        *,
        experiment: str | None = None,
        description: str = "",
    ) -> None:
        from plinth.abtests.design import check_name

        # named as the service names pipelines: a bad name fails here, not once a run is
        # recorded (nor in a path made of it)
        check_name(name, "pipeline name")
        if experiment is not None:
            check_name(experiment, "experiment name")
        if not steps:
            raise InvalidArgument(f"pipeline {name!r} has no steps")
        self.name = name
        self.steps = list(steps)
        self.params = _checked_params(name, params or {})
        self.experiment = experiment
        self.description = description
        self.inputs = _wire(name, self.steps, self.params)

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def step(self, name: str) -> Step:
        for candidate in self.steps:
            if candidate.name == name:
                return candidate
        raise InvalidArgument(
            f"pipeline {self.name!r} has no step {name!r}; its steps are "
            f"{', '.join(self.step_names)}"
        )

    def run(
        self,
        params: dict[str, Any] | None = None,
        client: Client | None = None,
        raise_on_failure: bool = True,
    ) -> PipelineRun:
        """Run every step in this process, recorded as a pipeline run and a tracking run
        of ``client`` (default: ``plinth.default_client()``); raises ``PipelineFailed``
        when a step fails (unless ``raise_on_failure`` is False: the run says so)."""
        from plinth.client import default_client
        from plinth.pipelines.runner import run_pipeline

        run = run_pipeline(client or default_client(), self, params)
        if raise_on_failure and run.status != "succeeded":
            raise PipelineFailed(run)
        return run

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} steps={self.step_names}>"


def _checked_params(pipeline: str, params: dict[str, Any]) -> dict[str, Any]:
    # params are stored with each run (and logged to its tracking run): JSON values only
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False, sort_keys=True)  # as stored
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"pipeline {pipeline!r}: param {key!r} is {type(value).__name__} {value!r:.60}; "
                "params must be JSON values (strings, numbers, booleans, lists, dicts)"
            ) from None
    return dict(params)


def _wire(pipeline: str, steps: list[Step], params: dict[str, Any]) -> dict[str, dict[str, Input]]:
    names = [s.name for s in steps if isinstance(s, Step)]
    wired: dict[str, dict[str, Input]] = {}
    for position, current in enumerate(steps):
        if not isinstance(current, Step):
            raise InvalidArgument(
                f"pipeline {pipeline!r}: item {position} is {type(current).__name__}, not a "
                "step; decorate the function with @plinth.step"
            )
        if current.name in wired:
            raise InvalidArgument(
                f"pipeline {pipeline!r}: two steps are named {current.name!r}; give one "
                "another name with @step(name=...)"
            )
        earlier = names[:position]
        inputs: dict[str, Input] = {}
        for parameter in current.parameters:
            if parameter == CONTEXT:
                inputs[parameter] = Input("context", parameter)
            elif parameter in earlier:
                inputs[parameter] = Input("step", parameter)
            elif parameter in names:
                why = "is itself" if parameter == current.name else "runs after it"
                raise InvalidArgument(
                    f"pipeline {pipeline!r}: step {current.name!r} takes {parameter!r}, which "
                    f"{why}; a step can only use the steps before it"
                )
            elif parameter in params or parameter in current.defaults:
                inputs[parameter] = Input("param", parameter)
            else:
                raise InvalidArgument(
                    f"pipeline {pipeline!r}: step {current.name!r} takes {parameter!r}, which "
                    f"is no earlier step ({', '.join(earlier) or 'none'}), no param "
                    f"({', '.join(params) or 'none'}) and has no default; add it to the "
                    "pipeline's params or give it a default"
                )
        wired[current.name] = inputs
    return wired

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

from plinth.pipelines.steps.base import ValidationFailed
from plinth.pipelines.steps.data import training_data, validate_data
from plinth.pipelines.steps.models import champion_challenger, register, train, validate_model
from plinth.pipelines.steps.scoring import batch_score, deliver

__all__ = [
    "ValidationFailed",
    "batch_score",
    "champion_challenger",
    "deliver",
    "register",
    "train",
    "training_data",
    "validate_data",
    "validate_model",
]

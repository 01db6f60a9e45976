"""Pipelines: steps (``@plinth.step``) composed in a ``plinth.Pipeline``, run in process
(``runner``) or by the scheduler, every run recorded."""

from plinth.pipelines.pipeline import Pipeline, PipelineFailed
from plinth.pipelines.step import Step, step

__all__ = ["Pipeline", "PipelineFailed", "Step", "step"]

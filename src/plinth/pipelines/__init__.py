"""Pipelines: steps (``@plinth.step``, ``step.py``) composed in a ``plinth.Pipeline``
(``pipeline.py``), run in process (``runner.py``) or by the scheduler (``scheduler.py``,
``worker.py``), every run recorded (``records.py``)."""

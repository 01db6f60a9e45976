"""``plinth demo``: the architecture's story ("How data flows") run end to end on
generated churn data, through the parts' public APIs (``runner`` drives ``story`` and
``loop``; ``world`` generates the data; ``retrain`` is the retraining pipeline)."""

"""Statements of the run lifecycle, built once: a run's start and end are hot paths, and
building a SQLAlchemy statement costs more than running it on SQLite."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, or_, select, update

from plinth.store.schema import experiments, params, runs

# a name before an id, as the access rules read a reference
find_experiment = (
    select(experiments.c.id, experiments.c.name, experiments.c.deleted_at)
    .where(or_(experiments.c.name == bindparam("ref"), experiments.c.id == bindparam("ref")))
    .order_by((experiments.c.name == bindparam("ref")).desc())
)
# no number from a deleted experiment: a run started as it is deleted gets none
take_run_number = (
    update(experiments)
    .where(experiments.c.id == bindparam("experiment_id"), experiments.c.deleted_at.is_(None))
    .values(next_run_number=experiments.c.next_run_number + 1)
    .returning(experiments.c.next_run_number)
)
run_named = select(runs.c.id).where(
    runs.c.experiment_id == bindparam("experiment_id"), runs.c.name == bindparam("run_name")
)
insert_run = insert(runs)
run_status = select(runs.c.status).where(runs.c.id == bindparam("run_id"))
run_state = select(runs.c.status, runs.c.deleted_at).where(runs.c.id == bindparam("run_id"))
end_running_run = (
    update(runs)
    .where(runs.c.id == bindparam("run_id"), runs.c.status == "RUNNING")
    .values(status=bindparam("new_status"), end_time=bindparam("ended_at"))
)
touch_run = (
    update(runs).where(runs.c.id == bindparam("run_id")).values(heartbeat_at=bindparam("now"))
)
params_of_group = select(params.c.key, params.c.value).where(
    params.c.run_id == bindparam("run_id"),
    params.c.group == bindparam("param_group"),
    params.c.key.in_(bindparam("keys", expanding=True)),
)
insert_params = insert(params)

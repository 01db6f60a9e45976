"""Experiments: create, get, get by name, search (filter, order, pages), tags, rename,
delete and restore, and the default experiment "0"."""

from __future__ import annotations

from _scenario import check, equal, expect_error, report, unique
from mlflow import MlflowClient
from mlflow.entities import ViewType

client = MlflowClient()

name = unique("exp")
exp_id = client.create_experiment(name, tags={"team": "churn"})
exp = client.get_experiment(exp_id)
equal(exp.name, name, "get_experiment: name")
equal(exp.lifecycle_stage, "active", "get_experiment: lifecycle_stage")
equal(exp.tags, {"team": "churn"}, "get_experiment: tags")
check(exp.artifact_location.startswith("mlflow-artifacts:/"), exp.artifact_location)
check(exp.creation_time and exp.creation_time > 0, f"creation_time {exp.creation_time!r}")

equal(client.get_experiment_by_name(name).experiment_id, exp_id, "get_experiment_by_name")
equal(client.get_experiment_by_name(unique("nobody")), None, "get_experiment_by_name (missing)")
expect_error("RESOURCE_ALREADY_EXISTS", client.create_experiment, name)
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_experiment, "999999")

client.set_experiment_tag(exp_id, "stage", "dev")
equal(client.get_experiment(exp_id).tags, {"team": "churn", "stage": "dev"}, "set_experiment_tag")

# search: by name, by tag and LIKE, ordered, in pages
prefix = unique("page")
others = [client.create_experiment(f"{prefix}-{i}") for i in range(3)]
found = client.search_experiments(filter_string=f"name = '{name}'")
equal([e.experiment_id for e in found], [exp_id], "search_experiments by name")
found = client.search_experiments(filter_string=f"tags.team = 'churn' AND name LIKE '{name}%'")
equal([e.experiment_id for e in found], [exp_id], "search_experiments by tag and LIKE")
pages, token = [], None
while True:
    page = client.search_experiments(
        filter_string=f"name LIKE '{prefix}%'", order_by=["name DESC"], max_results=2,
        page_token=token,
    )  # fmt: skip
    pages.append([e.experiment_id for e in page])
    token = page.token
    if not token:
        break
equal(pages, [others[::-1][:2], others[::-1][2:]], "search_experiments in pages of 2")

# update (rename)
new_name = unique("exp-renamed")
client.rename_experiment(exp_id, new_name)
equal(client.get_experiment(exp_id).name, new_name, "rename_experiment")
equal(client.get_experiment_by_name(name), None, "the old name after rename_experiment")
# (MLflow's own server answers BAD_REQUEST here)
expect_error(
    ("RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"), client.rename_experiment, others[0], new_name
)

# delete: the experiment and its runs are deleted; searches see them with the right view
run_id = client.create_run(exp_id).info.run_id
client.delete_experiment(exp_id)
equal(client.get_experiment(exp_id).lifecycle_stage, "deleted", "after delete_experiment")
equal(client.get_run(run_id).info.lifecycle_stage, "deleted", "a run of a deleted experiment")
active = client.search_experiments(filter_string=f"name = '{new_name}'")
equal(active, [], "search_experiments (active) after delete")
deleted = client.search_experiments(
    view_type=ViewType.DELETED_ONLY, filter_string=f"name = '{new_name}'"
)
equal([e.experiment_id for e in deleted], [exp_id], "search_experiments (DELETED_ONLY)")
# (MLflow: INVALID_PARAMETER_VALUE; Plinth's Conflict is INVALID_STATE: both say "not now")
expect_error(("INVALID_PARAMETER_VALUE", "INVALID_STATE"), client.create_run, exp_id)
client.restore_experiment(exp_id)
equal(client.get_experiment(exp_id).lifecycle_stage, "active", "after restore_experiment")
equal(client.get_run(run_id).info.lifecycle_stage, "active", "a run of a restored experiment")

# the default experiment, used when none is set
default = client.get_experiment("0")
equal(default.name, "Default", "experiment 0")
equal(client.get_experiment_by_name("Default").experiment_id, default.experiment_id, "Default")

report({"experiment_id": exp_id, "name": new_name, "tags": {"team": "churn", "stage": "dev"}})

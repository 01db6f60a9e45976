"""Runs: create (fluent and client), get, update, delete and restore, params, metrics and
their history, log_batch and its limits, tags, dataset inputs, search with MLflow's filter
syntax (client entities and the fluent pandas frame)."""

from __future__ import annotations

import time

import mlflow
import pandas as pd
from _scenario import check, equal, expect_error, report, unique
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

client = MlflowClient()

# A run in the default experiment, as a script that sets none does.
with mlflow.start_run() as run:
    mlflow.log_param("where", "default")
default_run = client.get_run(run.info.run_id)
equal(default_run.info.experiment_id, client.get_experiment("0").experiment_id, "default run")

exp_name = unique("runs")
exp_id = mlflow.set_experiment(exp_name).experiment_id

# Fluent logging
frame = pd.DataFrame({"age": [41, 35, 29, 52], "spend": [2.5, 1.0, 0.5, 4.0], "y": [1, 0, 0, 1]})
dataset = mlflow.data.from_pandas(frame, name="churn-train", targets="y")
with mlflow.start_run(run_name="baseline") as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_params({"depth": 3, "solver": "lbfgs"})
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.8, "f1": 0.7})
    mlflow.set_tag("team", "churn")
    mlflow.set_tags({"stage": "dev", "owner": "ana"})
    mlflow.log_input(dataset, context="training")
baseline = run.info.run_id

r = client.get_run(baseline)
equal(r.info.run_name, "baseline", "run_name")
equal(r.info.status, "FINISHED", "status after the with block")
check(r.info.end_time and r.info.end_time >= r.info.start_time, f"end_time {r.info.end_time}")
equal(r.info.experiment_id, exp_id, "experiment_id")
equal(r.info.lifecycle_stage, "active", "lifecycle_stage")
check(r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri)
equal(r.data.params, {"lr": "0.1", "depth": "3", "solver": "lbfgs"}, "params")
equal(r.data.metrics, {"loss": 0.2, "acc": 0.8, "f1": 0.7}, "latest metrics")
equal(r.data.tags.get("team"), "churn", "tag team")
equal(r.data.tags.get("owner"), "ana", "tag owner")
equal(r.data.tags.get("mlflow.runName"), "baseline", "tag mlflow.runName")
inputs = r.inputs.dataset_inputs
equal([i.dataset.name for i in inputs], ["churn-train"], "dataset inputs")
# the data set as MLflow logged it: its source (to load it again), schema, profile, context
logged, sent = inputs[0].dataset, dataset.to_dict()
equal(logged.digest, sent["digest"], "dataset digest")
equal(logged.source_type, sent["source_type"], "dataset source type")
equal(type(mlflow.data.get_source(logged)), type(dataset.source), "mlflow.data.get_source")
equal((logged.schema, logged.profile), (sent["schema"], sent["profile"]), "schema, profile")
equal({t.key: t.value for t in inputs[0].tags}, {"mlflow.data.context": "training"}, "input tags")

history = client.get_metric_history(baseline, "loss")
equal([(m.step, m.value) for m in history], [(s, 1.0 / (s + 1)) for s in range(5)], "history")
check(all(m.timestamp > 0 for m in history), "history timestamps")
equal(client.get_metric_history(baseline, "nothing"), [], "history of an unknown metric")

# A finished run reopened (start_run(run_id=...)): it runs again and ends again. (Plinth
# refuses a metric logged to a run that has ended; MLflow takes it: not checked here.)
with mlflow.start_run(run_id=baseline):
    equal(client.get_run(baseline).info.status, "RUNNING", "status of a reopened run")
    mlflow.log_metric("after", 1.0)
equal(client.get_run(baseline).info.status, "FINISHED", "status after the reopened run ended")
equal(client.get_run(baseline).data.metrics.get("after"), 1.0, "metric of the reopened run")

# Changing a param's value is refused
expect_error("INVALID_PARAMETER_VALUE", client.log_param, baseline, "lr", 0.2)
client.log_param(baseline, "lr", 0.1)  # the same value again is fine

# Client logging: create_run, log_batch, set_tag, update_run, set_terminated
created = client.create_run(exp_id, run_name="candidate", tags={"team": "risk"})
cand = created.info.run_id
equal(created.info.status, "RUNNING", "create_run status")
now = int(time.time() * 1000)
client.log_batch(
    cand,
    metrics=[Metric("loss", 1.0 - s / 200, now + s, s) for s in range(100)]
    + [Metric("acc", 0.9, now, 0), Metric("f1", 0.6, now, 0)],
    params=[Param("lr", "0.2"), Param("depth", "5"), Param("solver", "saga")],
    tags=[RunTag("stage", "prod")],
)
client.set_tag(cand, "owner", "bo")
client.update_run(cand, name="candidate-2")
client.set_terminated(cand, "FAILED")
c = client.get_run(cand)
equal(c.info.run_name, "candidate-2", "update_run name")
equal(c.data.tags.get("mlflow.runName"), "candidate-2", "runName tag after update_run")
equal(c.info.status, "FAILED", "set_terminated status")
equal(c.data.metrics["loss"], 1.0 - 99 / 200, "latest loss of the batch")
equal(len(client.get_metric_history(cand, "loss")), 100, "history of the batch")
equal(c.data.params, {"lr": "0.2", "depth": "5", "solver": "saga"}, "batch params")
equal((c.data.tags["stage"], c.data.tags["owner"]), ("prod", "bo"), "batch and set tags")

# log_batch beyond MLflow's limits: keys of at most 250 characters (the client splits long
# lists itself; errors.py sends one too long over plain HTTP)
expect_error("INVALID_PARAMETER_VALUE", client.log_batch, cand, tags=[RunTag("k" * 251, "v")])

third = client.create_run(exp_id, run_name="third").info.run_id
client.log_batch(third, metrics=[Metric("acc", 0.5, now, 0)], params=[Param("lr", "0.3")])
client.set_terminated(third)


def ids(filter_string: str, **kwargs: object) -> list[str]:
    return [x.info.run_id for x in client.search_runs([exp_id], filter_string, **kwargs)]


# Search: MLflow's filter syntax
equal(ids("metrics.acc > 0.75", order_by=["metrics.acc DESC"]), [cand, baseline], "acc > 0.75")
equal(ids("params.solver = 'lbfgs'"), [baseline], "params.solver")
in_ids = f"attributes.run_id IN ('{baseline}', '{third}')"
equal(ids(in_ids, order_by=["params.lr"]), [baseline, third], "run_id IN")
equal(ids("tags.team = 'churn' AND metrics.f1 >= 0.7"), [baseline], "tag and metric")
equal(ids("tags.`mlflow.runName` = 'third'"), [third], "backquoted tag")
equal(ids("attributes.run_name LIKE 'cand%'"), [cand], "run_name LIKE")
equal(ids("attributes.status = 'FAILED'"), [cand], "status")
equal(ids(f"attributes.run_id = '{third}'"), [third], "run_id")
equal(ids("params.solver ILIKE 'SAG%'"), [cand], "ILIKE")
equal(ids("metrics.loss < 0.3 and params.depth != '5'"), [baseline], "lower-case and, !=")
equal(ids("dataset.name = 'churn-train'"), [baseline], "dataset.name")
equal(ids("dataset.context = 'training'"), [baseline], "dataset.context")
equal(ids("", order_by=["attributes.start_time ASC"]), [baseline, cand, third], "order start")
first = client.search_runs([exp_id], "", order_by=["metrics.acc ASC"], max_results=2)
equal([x.info.run_id for x in first], [third, baseline], "first page")
rest = client.search_runs([exp_id], "", order_by=["metrics.acc ASC"], page_token=first.token)
equal([x.info.run_id for x in rest], [cand], "second page")
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp_id], "metrics.acc >>> 1")
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp_id], "attributes.nope = 'x'")

frame = mlflow.search_runs([exp_id], "params.depth = '3'")
equal(frame["run_id"].tolist(), [baseline], "mlflow.search_runs frame")
equal(frame["params.solver"].tolist(), ["lbfgs"], "frame params column")
equal(frame["metrics.acc"].tolist(), [0.8], "frame metrics column")

# Delete and restore
client.delete_run(third)
equal(client.get_run(third).info.lifecycle_stage, "deleted", "after delete_run")
equal(ids("params.lr = '0.3'"), [], "a deleted run is not searched")
equal(ids("params.lr = '0.3'", run_view_type=ViewType.DELETED_ONLY), [third], "DELETED_ONLY")
equal(len(ids("", run_view_type=ViewType.ALL)), 3, "ALL")
client.restore_run(third)
equal(ids("params.lr = '0.3'"), [third], "after restore_run")
client.delete_run(third)

expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, "0" * 32)
expect_error("RESOURCE_DOES_NOT_EXIST", client.log_param, "0" * 32, "lr", 1)

report(
    {
        "experiment_id": exp_id,
        "experiment_name": exp_name,
        "baseline": baseline,
        "candidate": cand,
        "deleted": third,
        "default_run": default_run.info.run_id,
    }
)

"""Everyday client usage beyond single calls: sklearn autologging, nested runs, async
logging, NaN and infinite metrics, deleting a tag, names with spaces and non-ASCII
characters, and a model loaded by runs:/, models:/m-..., models:/name/Stage and
models:/name/latest URIs."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from _scenario import check, equal, report, unique
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore", category=FutureWarning)  # stages are deprecated in MLflow
client = MlflowClient()
exp_id = mlflow.set_experiment(unique("usage")).experiment_id
rng = np.random.default_rng(1)
X = pd.DataFrame(rng.normal(size=(100, 3)), columns=["a", "b", "c"])
y = (X["a"] > 0).astype(int)

# autologging: params, training metrics, a logged model and the training data set
mlflow.sklearn.autolog()
with mlflow.start_run() as run:
    fitted = LogisticRegression(C=0.5).fit(X, y)
mlflow.sklearn.autolog(disable=True)
auto = client.get_run(run.info.run_id)
equal(auto.data.params.get("C"), "0.5", "autologged param C")
check("training_accuracy_score" in auto.data.metrics, f"autologged metrics {auto.data.metrics}")
equal(len(auto.outputs.model_outputs), 1, "autologged model output")
equal(len(auto.inputs.dataset_inputs), 1, "autologged training data set")
model_id = auto.outputs.model_outputs[0].model_id
predicted = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(X[:10])
equal(predicted.tolist(), fitted.predict(X[:10]).tolist(), "the autologged model predicts")

# nested runs
with (
    mlflow.start_run(run_name="parent") as parent,
    mlflow.start_run(run_name="child", nested=True) as child,
):
    mlflow.log_metric("m", 1.0)
found = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
equal([r.info.run_id for r in found], [child.info.run_id], "children by parentRunId")
equal(mlflow.get_parent_run(child.info.run_id).info.run_id, parent.info.run_id, "parent run")

# async logging, odd values, big steps and timestamps, a deleted tag
with mlflow.start_run() as run:
    for i in range(300):
        mlflow.log_metric("async", i, step=i, synchronous=False)
    mlflow.log_metric("nan", float("nan"))
    mlflow.log_metric("inf", float("inf"))
    mlflow.log_metric("big", 1.0, step=2**40, timestamp=2**41)
    mlflow.set_tags({"keep": "1", "drop": "2"})
mlflow.flush_async_logging()
odd = client.get_run(run.info.run_id)
equal(len(client.get_metric_history(run.info.run_id, "async")), 300, "async points")
check(math.isnan(odd.data.metrics["nan"]), f"NaN metric {odd.data.metrics['nan']!r}")
check(odd.data.metrics["inf"] > 1e308, f"infinite metric {odd.data.metrics['inf']!r}")
big = client.get_metric_history(run.info.run_id, "big")
equal([(m.step, m.timestamp) for m in big], [(2**40, 2**41)], "int64 step and timestamp")
client.delete_tag(run.info.run_id, "drop")
tags = client.get_run(run.info.run_id).data.tags
equal((tags.get("keep"), "drop" in tags), ("1", False), "after delete_tag")

# names with spaces, slashes and non-ASCII characters
odd_name = unique("ünï cödé / space")
odd_exp = client.create_experiment(odd_name)
equal(client.get_experiment_by_name(odd_name).experiment_id, odd_exp, "odd experiment name")
odd_run = client.create_run(odd_exp, run_name="rün 1").info.run_id
client.log_param(odd_run, "päram with space", "välue")
client.log_metric(odd_run, "m/with/slash", 1.0)
work = Path(tempfile.mkdtemp())
(work / "file ü.txt").write_text("ü")
client.log_artifact(odd_run, str(work / "file ü.txt"), "dir with space")
filter_string = "params.`päram with space` = 'välue' and metrics.`m/with/slash` = 1"
equal([r.info.run_id for r in client.search_runs([odd_exp], filter_string)], [odd_run], "odd")
equal(
    [a.path for a in client.list_artifacts(odd_run, "dir with space")],
    ["dir with space/file ü.txt"],
    "odd artifact path",
)
got = client.download_artifacts(odd_run, "dir with space/file ü.txt", str(work))
equal(Path(got).read_text(), "ü", "odd artifact downloaded")

# model URIs: registered in log_model, loaded every way MLflow names it
name = unique("uris")
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(
        fitted, name="model", input_example=X[:3], registered_model_name=name
    )
expected = fitted.predict(X[:5]).tolist()
client.transition_model_version_stage(name, "1", "Production")
for uri in (
    f"runs:/{run.info.run_id}/model",
    info.model_uri,
    f"models:/{name}/1",
    f"models:/{name}/Production",
    f"models:/{name}/latest",
):
    equal(mlflow.pyfunc.load_model(uri).predict(X[:5]).tolist(), expected, f"predict of {uri}")
flavors = mlflow.models.get_model_info(f"models:/{name}/1").flavors
check({"python_function", "sklearn"} <= set(flavors), f"get_model_info's flavors {flavors}")

report({"autolog_run": auto.info.run_id, "odd_run": odd_run, "model": name})

"""Models: mlflow.sklearn.log_model (a logged model), register_model (from models:/m-...
and from runs:/...), aliases, tags, descriptions, stages, search_registered_models and
search_model_versions, pyfunc.load_model("models:/name@alias") and predict, deletes."""

from __future__ import annotations

import warnings

import mlflow
import numpy as np
from _scenario import check, equal, expect_error, report, unique
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore", category=FutureWarning)  # stages are deprecated in MLflow
client = MlflowClient()
rng = np.random.default_rng(7)
X = rng.normal(size=(200, 3))
y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
model = LogisticRegression().fit(X, y)

mlflow.set_experiment(unique("models"))
with mlflow.start_run() as run:
    mlflow.log_param("C", 1.0)
    mlflow.log_metric("acc", float(model.score(X, y)))
    info = mlflow.sklearn.log_model(model, name="model", input_example=X[:3])
run_id = run.info.run_id
check(info.model_uri.startswith("models:/m-"), f"log_model's uri {info.model_uri}")
equal(info.run_id, run_id, "log_model's run")
logged = mlflow.get_logged_model(info.model_id)
equal(logged.status, "READY", "the logged model's status")
equal(logged.source_run_id, run_id, "the logged model's run")
outputs = client.get_run(run_id).outputs.model_outputs
equal([o.model_id for o in outputs], [info.model_id], "the run's model outputs")

name = unique("churn")
v1 = mlflow.register_model(info.model_uri, name)
equal(v1.version, "1", "first version")
equal(v1.status, "READY", "version status")
v2 = mlflow.register_model(f"runs:/{run_id}/model", name)
equal(v2.version, "2", "second version (from runs:/)")
equal(client.get_model_version(name, "2").run_id, run_id, "version 2's run")
expect_error("RESOURCE_ALREADY_EXISTS", client.create_registered_model, name)
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_registered_model, unique("nobody"))
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_model_version, name, "9")

# aliases
client.set_registered_model_alias(name, "champion", v1.version)
client.set_registered_model_alias(name, "challenger", v2.version)
equal(client.get_model_version_by_alias(name, "champion").version, "1", "alias champion")
equal(
    client.get_registered_model(name).aliases,
    {"champion": "1", "challenger": "2"},
    "the model's aliases",
)
equal(client.get_model_version(name, "2").aliases, ["challenger"], "the version's aliases")
client.delete_registered_model_alias(name, "challenger")
expect_error(
    ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"),
    client.get_model_version_by_alias,
    name,
    "challenger",
)

# tags and descriptions
client.set_registered_model_tag(name, "team", "churn")
client.set_registered_model_tag(name, "tmp", "x")
client.delete_registered_model_tag(name, "tmp")
client.set_model_version_tag(name, "1", "validated", "yes")
client.set_model_version_tag(name, "1", "tmp", "x")
client.delete_model_version_tag(name, "1", "tmp")
client.update_registered_model(name, description="churn classifier")
client.update_model_version(name, "1", description="first fit")
rm = client.get_registered_model(name)
equal(rm.tags, {"team": "churn"}, "registered model tags")
equal(rm.description, "churn classifier", "registered model description")
mv = client.get_model_version(name, "1")
equal(mv.tags, {"validated": "yes"}, "model version tags")
equal(mv.description, "first fit", "model version description")
equal(mv.source.startswith(("models:/", "mlflow-artifacts:/", "runs:/")), True, mv.source)

# stages (deprecated in MLflow, still answered)
staged = client.transition_model_version_stage(name, "2", "Staging")
equal(staged.current_stage, "Staging", "transition to Staging")
equal([v.version for v in client.get_latest_versions(name, ["Staging"])], ["2"], "latest")

# search
found = client.search_registered_models(filter_string=f"name = '{name}'")
equal([m.name for m in found], [name], "search_registered_models by name")
found = client.search_registered_models(filter_string=f"name LIKE '{name[:-4]}%'")
equal([m.name for m in found], [name], "search_registered_models LIKE")
versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number ASC"])
equal([v.version for v in versions], ["1", "2"], "search_model_versions by name")
versions = client.search_model_versions(f"run_id = '{run_id}' AND name = '{name}'")
equal(sorted(v.version for v in versions), ["1", "2"], "search_model_versions by run")

# load and predict
loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
equal(loaded.predict(X[:20]).tolist(), model.predict(X[:20]).tolist(), "pyfunc predict")
sk = mlflow.sklearn.load_model(f"models:/{name}/2")
check(np.allclose(sk.predict_proba(X[:5]), model.predict_proba(X[:5])), "sklearn load")
uri = client.get_model_version_download_uri(name, "1")
check(uri.startswith("mlflow-artifacts:/"), f"download uri {uri}")

# deletes
client.delete_model_version(name, "2")
equal([v.version for v in client.search_model_versions(f"name = '{name}'")], ["1"], "after delete")
other = unique("empty")
client.create_registered_model(other, description="to delete")
client.delete_registered_model(other)
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_registered_model, other)

report({"run_id": run_id, "model": name, "model_id": info.model_id})

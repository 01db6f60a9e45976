"""MLflow's error shape over plain HTTP ({"error_code", "message"} with MLflow's statuses),
log-batch's limits (which the client's own splitting never reaches), and MlflowException's
error_code on the client side."""

from __future__ import annotations

import requests
from _scenario import TRACKING_URI, check, equal, expect_error, report, unique
from mlflow import MlflowClient

API = f"{TRACKING_URI}/api/2.0/mlflow"
client = MlflowClient()


def error(response: requests.Response, status: int, code: str, what: str) -> str:
    equal(response.status_code, status, f"{what}: HTTP status ({response.text[:200]})")
    body = response.json()
    equal(body.get("error_code"), code, f"{what}: error_code")
    check(isinstance(body.get("message"), str) and body["message"], f"{what}: message {body}")
    return str(body["message"])


missing = "0" * 32
error(
    requests.get(f"{API}/runs/get", params={"run_id": missing}),
    404,
    "RESOURCE_DOES_NOT_EXIST",
    "runs/get of a missing run",
)
error(
    requests.get(f"{API}/experiments/get-by-name", params={"experiment_name": unique("none")}),
    404,
    "RESOURCE_DOES_NOT_EXIST",
    "experiments/get-by-name of a missing name",
)
error(
    requests.get(f"{API}/registered-models/get", params={"name": unique("none")}),
    404,
    "RESOURCE_DOES_NOT_EXIST",
    "registered-models/get of a missing model",
)

exp_id = client.create_experiment(unique("errors"))
error(
    requests.post(f"{API}/experiments/create", json={"name": client.get_experiment(exp_id).name}),
    400,
    "RESOURCE_ALREADY_EXISTS",
    "experiments/create of a taken name",
)
error(
    requests.post(f"{API}/runs/create", json={"experiment_id": exp_id, "start_time": "soon"}),
    400,
    "INVALID_PARAMETER_VALUE",
    "runs/create with a start_time that is no number",
)
run_id = client.create_run(exp_id).info.run_id
metrics = [{"key": "m", "value": 1.0, "timestamp": 1, "step": i} for i in range(1001)]
message = error(
    requests.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}),
    400,
    "INVALID_PARAMETER_VALUE",
    "log-batch of 1,001 metrics",
)
check("1000" in message.replace(",", ""), f"the message names the limit: {message}")
params = [{"key": f"p{i}", "value": "1"} for i in range(101)]
error(
    requests.post(f"{API}/runs/log-batch", json={"run_id": run_id, "params": params}),
    400,
    "INVALID_PARAMETER_VALUE",
    "log-batch of 101 params",
)
equal(client.get_run(run_id).data.metrics, {}, "nothing of a refused batch was logged")
equal(client.get_run(run_id).data.params, {}, "no param of a refused batch was logged")
# int64 fields may come as JSON strings, as the protobuf JSON mapping writes them
ok = requests.post(
    f"{API}/runs/log-metric",
    json={"run_id": run_id, "key": "m", "value": 0.5, "timestamp": "1700000000000", "step": "3"},
)
equal(ok.status_code, 200, f"log-metric with int64 strings ({ok.text[:200]})")
equal([(m.step, m.value) for m in client.get_metric_history(run_id, "m")], [(3, 0.5)], "history")

expect_error("RESOURCE_DOES_NOT_EXIST", client.get_run, missing)
expect_error("RESOURCE_DOES_NOT_EXIST", client.get_experiment, "999999")
expect_error(
    "RESOURCE_ALREADY_EXISTS", client.create_experiment, client.get_experiment(exp_id).name
)
expect_error("INVALID_PARAMETER_VALUE", client.search_runs, [exp_id], "params.x = unquoted")

report({"run_id": run_id})

"""The model service over real HTTP: /predict, the Open Inference Protocol, health,
metrics, the prediction log, bad input, hot swap under load and feature enrichment."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from plinth.client import Client
from plinth.errors import NotFound, PermissionDenied
from plinth.serving.app import ServeConfig, create_service
from plinth.store.schema import predictions
from tests.serving.conftest import EXAMPLE, Rule, constant, logistic, service

ROW = {"age": 41, "spend": 2.5}


@pytest.fixture
def churn(client: Client) -> Client:
    version = client.register_model(logistic(), "churn", input_example=EXAMPLE)
    client.set_alias("churn", "live", version.version)
    return client


@pytest.mark.parametrize(
    "body",
    [
        [ROW, {"age": 20, "spend": 1.0}],
        {"records": [ROW, {"age": 20, "spend": 1.0}]},
        {"dataframe_records": [ROW, {"age": 20, "spend": 1.0}]},
        {"columns": {"age": [41, 20], "spend": [2.5, 1.0]}},
        {"dataframe_split": {"columns": ["age", "spend"], "data": [[41, 2.5], [20, 1.0]]}},
    ],
    ids=["records", "records-key", "mlflow-records", "columns", "mlflow-split"],
)
def test_predict_takes_records_or_columns(churn: Client, body: Any) -> None:
    with service(churn, "models:/churn@live", poll_seconds=0) as http:
        answer = http.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["predictions"] == [1, 0]
        assert (found["model"], found["model_version"]) == ("churn", 1)
        assert answer.headers["x-model-version"] == "1" and len(found["request_id"]) == 32
        one = http.post("/predict", json=ROW, headers={"x-request-id": "r-1"}).json()
        assert one["predictions"] == [1] and one["request_id"] == "r-1"


def test_the_open_inference_protocol(churn: Client) -> None:
    with service(churn, "models:/churn@live", poll_seconds=0) as http:
        assert http.get("/v2/health/live").json()["live"] is True
        assert http.get("/v2/health/ready").json()["ready"] is True
        assert http.get("/v2/models/churn/ready").json()["ready"] is True
        meta = http.get("/v2/models/churn").json()
        assert meta["versions"] == ["1"] and meta["platform"] == "plinth-sklearn"
        assert [i["name"] for i in meta["inputs"]] == ["age", "spend"]
        assert [i["datatype"] for i in meta["inputs"]] == ["INT64", "FP64"]
        by_column = {
            "inputs": [
                {"name": "age", "shape": [2], "datatype": "INT64", "data": [41, 20]},
                {"name": "spend", "shape": [2, 1], "datatype": "FP64", "data": [[2.5], [1.0]]},
            ]
        }
        answer = http.post("/v2/models/churn/infer", json=by_column).json()
        assert answer["model_version"] == "1"
        [output] = answer["outputs"]
        assert (output["data"], output["shape"], output["datatype"]) == ([1, 0], [2], "INT64")
        matrix = {
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [41, 2.5, 20, 1]}]
        }
        assert http.post("/v2/models/churn/infer", json=matrix).json()["outputs"][0]["data"] == [
            1,
            0,
        ]
        other = http.post("/v2/models/fraud/infer", json=by_column)
        assert (
            other.status_code == 404
            and "serves model 'churn', not 'fraud'" in other.json()["error"]
        )
        assert http.get("/v2/models/fraud").status_code == 404


def test_an_unknown_route_or_method_answers_in_the_error_shape(churn: Client) -> None:
    with service(churn, "models:/churn@live", poll_seconds=0) as http:
        missing = http.get("/nothing/here")
        wrong_method = http.get("/predict")
    assert (missing.status_code, missing.json()["error_code"]) == (404, "NOT_FOUND")
    assert (wrong_method.status_code, wrong_method.json()["error_code"]) == (
        405,
        "METHOD_NOT_ALLOWED",
    )
    assert wrong_method.headers["allow"] == "POST"
    assert "detail" not in missing.json() and "detail" not in wrong_method.json()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 422, "the request body is empty"),
        (b"{not json", 422, "not valid JSON"),
        (b"[]", 422, "holds no rows"),
        (b"[1, 2]", 422, "list of JSON objects"),
        (b'"text"', 422, "JSON str"),
        (b'[{"age": 41}]', 422, "missing column 'spend' (float64)"),
        (b'[{"age": "old", "spend": 1.0}]', 422, "column 'age' has dtype string"),
        (b'{"columns": {"age": [1, 2], "spend": [1.0]}}', 422, "different lengths"),
        (b'{"columns": {"age": 1}}', 422, "'age' is not a list"),
        (b'[{"age": [1, [2]], "spend": 1.0}]', 422, "column 'age' has dtype object"),
        (b"[{}]", 422, "rows hold no columns"),
        (b'{"dataframe_split": {"columns": [], "data": [[]]}}', 422, "rows hold no columns"),
        (b'{"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}}', 422, "more than once"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_problem(
    churn: Client, body: bytes, status: int, message: str
) -> None:
    path = "/v2/models/churn/infer" if body.startswith(b'{"inputs"') else "/predict"
    with service(churn, "models:/churn@live", poll_seconds=0) as http:
        answer = http.post(path, content=body)
        assert answer.status_code == status
        assert message in answer.json()["message"]
        assert answer.json()["error_code"] == "INVALID_ARGUMENT"


def test_size_limits(churn: Client) -> None:
    with service(churn, "models:/churn@live", poll_seconds=0, max_rows=100) as http:
        answer = http.post("/predict", json=[ROW] * 101)
        assert answer.status_code == 413
        assert "101 rows; the limit is 100" in answer.json()["message"]
        assert http.post("/predict", json=[ROW] * 100).status_code == 200
    with service(churn, "models:/churn@live", poll_seconds=0) as http:  # the default limit
        answer = http.post("/predict", json=[ROW] * 100_000)
        assert answer.status_code == 413 and "limit is 10000" in answer.json()["message"]
    with service(churn, "models:/churn@live", poll_seconds=0, max_body_bytes=1000) as http:
        assert http.post("/predict", json=[ROW] * 100).status_code == 413


def test_metrics_and_the_prediction_log(churn: Client) -> None:
    with service(churn, "models:/churn@live", poll_seconds=0) as http:
        for _ in range(3):
            http.post("/predict", json=[ROW, ROW], headers={"x-request-id": "abc"})
        http.post("/predict", json=[{"age": 1}])
        text = http.get("/metrics").text
        http.app.state.predictions.flush()  # type: ignore[attr-defined]
    assert 'plinth_requests_total{route="/predict",status="200"} 3.0' in text
    assert 'plinth_request_errors_total{route="/predict"} 1.0' in text
    assert 'plinth_model_version{model="churn"} 1.0' in text
    assert "plinth_request_latency_seconds_bucket" in text and "plinth_batch_rows" in text
    with churn.tracking.store.read() as conn:
        logged = conn.execute(select(predictions)).all()
    assert len(logged) == 3 and {(r.request_id, r.rows) for r in logged} == {("abc", 2)}
    assert logged[0].inputs == '{"age":[41,41],"spend":[2.5,2.5]}' and logged[0].outputs == "[1,1]"
    assert logged[0].model_version == 1 and logged[0].latency_ms > 0


def test_an_unknown_model_fails_at_start(client: Client) -> None:
    with pytest.raises(NotFound, match="registered model 'nope' does not exist"):
        create_service(ServeConfig("models:/nope@live"), client)


@pytest.mark.parametrize("batching", [True, False])
def test_hot_swap_under_load(client: Client, batching: bool) -> None:
    first = client.register_model(constant(0), "swap", input_example=EXAMPLE)
    second = client.register_model(constant(1), "swap", input_example=EXAMPLE)
    client.set_alias("swap", "live", first.version)
    answers: list[tuple[int, Any, int]] = []
    stop = threading.Event()
    with service(client, "models:/swap@live", poll_seconds=0.05, batching=batching) as http:

        def hammer() -> None:
            while not stop.is_set():
                answer = http.post("/predict", json=[ROW])
                found = answer.json()
                answers.append(
                    (answer.status_code, found.get("predictions"), found.get("model_version", 0))
                )

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        while len(answers) < 20:
            pass
        client.set_alias("swap", "live", second.version)
        holder = http.app.state.holder  # type: ignore[attr-defined]
        while holder.current.version.version != second.version:
            pass
        seen = len(answers)
        while len(answers) < seen + 20:
            pass
        stop.set()
        for t in threads:
            t.join()
    assert {status for status, _, _ in answers} == {200}  # no request failed during the swap
    # every answer came from the version it names: v1 says 0, v2 says 1
    assert all(p == [v - 1] for _, p, v in answers)
    assert {v for _, _, v in answers} == {1, 2} and answers[-1][2] == 2


def test_a_frame_without_signature_is_passed_as_is(client: Client) -> None:
    from sklearn.dummy import DummyClassifier

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    client.register_model(DummyClassifier(strategy="most_frequent").fit(frame, [3, 3]), "bare")
    with service(client, "models:/bare/1", poll_seconds=0) as http:
        assert http.post("/predict", json=[{"x": 1.0}]).json()["predictions"] == [3]


def tamper(client: Client, model: str) -> None:
    """Truncate the model file of every downloaded package of ``model`` (a bit flip on disk)."""
    from pathlib import Path

    cache = Path(client.settings.home).resolve() / "cache" / "models" / model
    for file in (p for p in cache.rglob("model/*") if p.is_file()):
        file.write_bytes(file.read_bytes()[:-10])


def test_a_package_failing_its_checksum_is_never_served(client: Client) -> None:
    from plinth.errors import InvalidArgument

    first = client.register_model(constant(0), "swap", input_example=EXAMPLE)
    second = client.register_model(constant(1), "swap", input_example=EXAMPLE)
    client.set_alias("swap", "live", first.version)
    client.load_model("models:/swap/2")  # downloaded now (v1 is not), tampered with below
    tamper(client, "swap")
    with pytest.raises(InvalidArgument, match="corrupt"):
        create_service(ServeConfig("models:/swap/2"), client)
    with service(client, "models:/swap@live", poll_seconds=0) as http:
        client.set_alias("swap", "live", second.version)  # moves to the corrupt package
        holder = http.app.state.holder  # type: ignore[attr-defined]
        with pytest.raises(InvalidArgument, match="corrupt"):
            holder.check()
        answer = http.post("/predict", json=[ROW]).json()
    assert (answer["predictions"], answer["model_version"]) == ([0], 1)  # still the good one


def test_a_pickled_model_is_served_only_when_trusted(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    client.register_model(Rule(str(marker)), "rule", input_example=EXAMPLE)
    with pytest.raises(PermissionDenied, match=r"models:/rule/1 is a pickled model package"):
        create_service(ServeConfig("models:/rule/1", poll_seconds=0), client)
    assert not marker.exists()
    with service(client, "models:/rule/1", poll_seconds=0, trust_pickle=True) as http:
        assert http.post("/predict", json=[ROW]).json()["predictions"] == [1]
    assert marker.exists()


def test_a_swap_to_a_pickled_version_is_refused_and_the_old_one_kept(
    client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    first = client.register_model(constant(0), "swap", input_example=EXAMPLE)
    client.set_alias("swap", "live", first.version)
    app = create_service(ServeConfig("models:/swap@live", poll_seconds=0), client)
    holder = app.state.holder
    pickled = client.register_model(Rule(str(marker)), "swap", input_example=EXAMPLE)
    client.set_alias("swap", "live", pickled.version)
    with pytest.raises(PermissionDenied, match=r"models:/swap/2 is a pickled model package"):
        holder.check()
    assert holder.current.version.version == first.version and not marker.exists()

"""The Open Inference Protocol (KServe v2), tested with its official client ``tritonclient``
against a running model service, plus the request reader on hand-made bodies."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from plinth.client import Client
from plinth.errors import InvalidArgument
from plinth.serving.oip import HEADER_LENGTH, parse_infer
from tests.serving.conftest import EXAMPLE, logistic, service

httpclient = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

AGES = np.array([41, 20, 35, 60], dtype=np.int64)
SPENDS = np.array([2.5, 1.0, 3.9, 0.5], dtype=np.float64)


@pytest.fixture
def served(client: Client) -> Iterator[tuple[Any, httpx.Client]]:
    """A tritonclient and a raw HTTP client for one model service serving churn v1."""
    client.register_model(logistic(), "churn", input_example=EXAMPLE)
    with service(client, "models:/churn/1", poll_seconds=0) as http:
        triton = httpclient.InferenceServerClient(url=http.base_url.netloc.decode())
        try:
            yield triton, http
        finally:
            triton.close()


def expected() -> list[int]:
    return [int(v) for v in logistic().predict(pd.DataFrame({"age": AGES, "spend": SPENDS}))]


def column_inputs(binary: bool) -> list[Any]:
    age = httpclient.InferInput("age", [4], "INT64")
    age.set_data_from_numpy(AGES, binary_data=binary)
    spend = httpclient.InferInput("spend", [4, 1], "FP64")
    spend.set_data_from_numpy(SPENDS.reshape(4, 1), binary_data=binary)
    return [age, spend]


# -- with the official client ------------------------------------------------------------


def test_server_and_model_metadata_and_readiness(served: tuple[Any, httpx.Client]) -> None:
    triton, _ = served
    assert triton.is_server_live() and triton.is_server_ready()
    server = triton.get_server_metadata()
    assert server["name"] == "plinth" and "binary_tensor_data" in server["extensions"]
    for version in ("", "1"):
        meta = triton.get_model_metadata("churn", model_version=version)
        assert meta["versions"] == ["1"] and meta["platform"] == "plinth-sklearn"
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("age", "INT64"),
            ("spend", "FP64"),
        ]
        assert triton.is_model_ready("churn", model_version=version)
    assert not triton.is_model_ready("churn", model_version="2")
    assert not triton.is_model_ready("fraud")


@pytest.mark.parametrize("binary_inputs", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize(
    "binary_outputs", [True, False, None], ids=["bin-out", "json-out", "default-out"]
)
def test_infer(
    served: tuple[Any, httpx.Client], binary_inputs: bool, binary_outputs: bool | None
) -> None:
    triton, _ = served
    name = triton.get_model_metadata("churn")["outputs"][0]["name"]  # the signature's
    outputs = (
        None
        if binary_outputs is None
        else [httpclient.InferRequestedOutput(name, binary_data=binary_outputs)]
    )
    result = triton.infer(
        "churn", column_inputs(binary_inputs), outputs=outputs, request_id="req-7"
    )
    answer = result.get_response()
    assert answer["id"] == "req-7" and answer["model_version"] == "1"
    [output] = answer["outputs"]
    wants_binary = binary_outputs is not False  # no outputs named: all binary (client default)
    assert ("binary_data_size" in output.get("parameters", {})) is wants_binary
    assert ("data" in output) is not wants_binary
    predictions = result.as_numpy(name)
    assert predictions.dtype == np.int64 and predictions.tolist() == expected()


def test_versioned_infer(served: tuple[Any, httpx.Client]) -> None:
    triton, _ = served
    result = triton.infer("churn", column_inputs(True), model_version="1")
    [output] = result.get_response()["outputs"]
    assert result.as_numpy(output["name"]).tolist() == expected()
    with pytest.raises(
        InferenceServerException, match="serves churn version 1, not version '2'"
    ) as e:
        triton.infer("churn", column_inputs(True), model_version="2")
    assert e.value.status() == "404"


def test_one_matrix_input_holds_the_columns(client: Client) -> None:
    from sklearn.linear_model import LogisticRegression

    dense = EXAMPLE.astype("float64")
    client.register_model(
        LogisticRegression().fit(dense, [0, 0, 1, 1]), "dense", input_example=dense
    )
    rows = np.column_stack([AGES, SPENDS])
    with service(client, "models:/dense/1", poll_seconds=0) as http:
        triton = httpclient.InferenceServerClient(url=http.base_url.netloc.decode())
        matrix = httpclient.InferInput("input__0", [4, 2], "FP64")
        matrix.set_data_from_numpy(rows)
        result = triton.infer("dense", [matrix])
        triton.close()
    [output] = result.get_response()["outputs"]
    wanted = (
        LogisticRegression()
        .fit(dense, [0, 0, 1, 1])
        .predict(pd.DataFrame(rows, columns=["age", "spend"]))
    )
    assert result.as_numpy(output["name"]).tolist() == wanted.tolist()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(served: tuple[Any, httpx.Client], algorithm: str) -> None:
    triton, _ = served
    result = triton.infer("churn", column_inputs(True), request_compression_algorithm=algorithm)
    [output] = result.get_response()["outputs"]
    assert result.as_numpy(output["name"]).tolist() == expected()


def test_a_compressed_body_cannot_unpack_past_the_limit(client: Client) -> None:
    import gzip

    client.register_model(logistic(), "churn", input_example=EXAMPLE)
    huge = body({"name": "age", "shape": [1], "datatype": "BYTES", "data": ["x" * 100_000]})
    with service(client, "models:/churn/1", poll_seconds=0, max_body_bytes=10_000) as http:
        packed = gzip.compress(huge)
        assert len(packed) < 10_000
        answer = http.post(
            "/v2/models/churn/infer", content=packed, headers={"content-encoding": "gzip"}
        )
        assert answer.status_code == 413 and "unpacks to more than 10000" in answer.json()["error"]
        garbage = http.post(
            "/v2/models/churn/infer", content=b"nope", headers={"content-encoding": "gzip"}
        )
        assert garbage.status_code == 400 and "not valid gzip" in garbage.json()["error"]
        other = http.post(
            "/v2/models/churn/infer", content=b"{}", headers={"content-encoding": "br"}
        )
        assert other.status_code == 400 and "'br' is not supported" in other.json()["error"]


def test_errors_reach_the_client_with_their_message(served: tuple[Any, httpx.Client]) -> None:
    triton, http = served
    declared = body(  # a shape that disagrees with the data (the client checks; curl does not)
        {"name": "age", "shape": [302], "datatype": "INT64", "data": list(range(300))},
        {"name": "spend", "shape": [302], "datatype": "FP64", "data": [1.0] * 302},
    )
    answer = http.post("/v2/models/churn/infer", content=declared)
    assert answer.status_code == 400
    assert answer.json() == {"error": "input 'age': shape [302] holds 302 values but 300 were sent"}
    with pytest.raises(InferenceServerException, match="missing column 'spend'") as e:
        triton.infer("churn", column_inputs(True)[:1])
    assert e.value.status() == "400"
    unknown = [httpclient.InferRequestedOutput("proba")]
    with pytest.raises(InferenceServerException, match="no output 'proba'"):
        triton.infer("churn", column_inputs(True), outputs=unknown)
    with pytest.raises(InferenceServerException, match="serves model 'churn', not 'fraud'") as e:
        triton.infer("fraud", column_inputs(True))
    assert e.value.status() == "404"


# -- over raw HTTP -------------------------------------------------------------------------


def test_v2_errors_are_the_protocol_body(served: tuple[Any, httpx.Client]) -> None:
    _, http = served
    for path, body in [
        ("/v2/models/churn/infer", b"{not json"),
        ("/v2/models/churn/versions/1/infer", b'{"inputs": []}'),
        ("/v2/models/fraud/infer", b'{"inputs": []}'),
    ]:
        answer = http.post(path, content=body)
        assert answer.status_code in (400, 404)
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()) == {"error"} and answer.json()["error"]
    assert set(http.get("/v2/models/churn/versions/9").json()) == {"error"}


def test_binary_request_and_response_by_hand(served: tuple[Any, httpx.Client]) -> None:
    _, http = served
    header = orjson.dumps(
        {
            "id": "by-hand",
            "inputs": [
                {"name": "age", "shape": [4], "datatype": "INT64",
                 "parameters": {"binary_data_size": 32}},
                {"name": "spend", "shape": [4], "datatype": "FP64", "data": SPENDS.tolist()},
            ],
            "parameters": {"binary_data_output": True},
        }
    )  # fmt: skip
    answer = http.post(
        "/v2/models/churn/infer",
        content=header + AGES.tobytes(),
        headers={HEADER_LENGTH: str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    length = int(answer.headers[HEADER_LENGTH])
    meta = orjson.loads(answer.content[:length])
    assert meta["id"] == "by-hand"
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 32}
    values = np.frombuffer(answer.content[length:], dtype="<i8")
    assert values.tolist() == expected()


# -- the request reader --------------------------------------------------------------------


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def test_every_numeric_datatype_and_bytes_decode_from_binary() -> None:
    for datatype, dtype in [
        ("BOOL", "|b1"), ("UINT8", "|u1"), ("INT16", "<i2"), ("INT32", "<i4"),
        ("UINT64", "<u8"), ("FP16", "<f2"), ("FP32", "<f4"), ("FP64", "<f8"),
    ]:  # fmt: skip
        values = np.array([1, 0, 1], dtype=dtype)
        header = body({"name": "a", "shape": [3], "datatype": datatype,
                       "parameters": {"binary_data_size": values.nbytes}})  # fmt: skip
        parsed = parse_infer(header + values.tobytes(), str(len(header)), ["a"])
        assert parsed.columns == {"a": values.tolist()}, datatype
    words = [b"yes", b"", "né".encode()]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = body({"name": "a", "shape": [3], "datatype": "BYTES",
                   "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
    assert parse_infer(header + raw, str(len(header)), ["a"]).columns == {"a": ["yes", "", "né"]}


def test_columns_from_a_matrix_or_one_tensor_per_input() -> None:
    wanted = {"a": [1, 2], "b": [0.5, 1.5]}
    matrix = body({"name": "m", "shape": [2, 2], "datatype": "FP64", "data": [1, 0.5, 2, 1.5]})
    assert parse_infer(matrix, None, ["a", "b"]).columns == wanted
    nested = body(
        {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
        {"name": "b", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]},
    )
    assert parse_infer(nested, None, ["a", "b"]).columns == wanted


@pytest.mark.parametrize(
    ("raw", "header", "message"),
    [
        (body({"name": "a", "shape": [302], "datatype": "FP64", "data": [0.0] * 300}), None,
         r"input 'a': shape \[302\] holds 302 values but 300 were sent"),
        (body({"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2, 3]]}), None,
         "ragged"),
        (body({"name": "a", "shape": [2, 3], "datatype": "INT64", "data": [1] * 6}), None,
         r"one \[rows, 1\] tensor"),
        (body({"name": "a", "shape": [1], "datatype": "INT128", "data": [1]}), None,
         "datatype 'INT128' is not one of"),
        (body({"name": "a", "shape": "2", "datatype": "INT64", "data": [1, 2]}), None,
         "shape must be a list of sizes"),
        (body({"name": "a", "shape": [1], "datatype": "INT64"}), None,
         "neither data nor binary_data_size"),
        (body({"name": "a", "shape": [2], "datatype": "INT64",
               "parameters": {"binary_data_size": 16}}), "x", "Inference-Header-Content-Length"),
        (body({"name": "a", "shape": [2], "datatype": "INT64",
               "parameters": {"binary_data_size": 64}}), "len", "does not fit"),
        (body({"name": "a", "shape": [3], "datatype": "INT64",
               "parameters": {"binary_data_size": 16}}), "len", "holds 3 values but 2"),
        (body({"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}, id=7), None,
         "request id must be a string"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_problem(raw: bytes, header: str | None, message: str) -> None:
    if header == "len":
        raw, header = raw + bytes(16), str(len(raw))
    with pytest.raises(InvalidArgument, match=message):
        parse_infer(raw, header, ["a"])


def test_binary_bytes_nobody_accounts_for_are_refused() -> None:
    header = body({"name": "a", "shape": [1], "datatype": "INT64", "data": [1]})
    with pytest.raises(InvalidArgument, match="8 bytes of binary data"):
        parse_infer(header + bytes(8), str(len(header)), ["a"])

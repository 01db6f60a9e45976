"""The Open Inference Protocol (KServe v2) as its official clients (``tritonclient``) speak it.

Routes: ``GET /v2`` (server metadata), ``GET /v2/models/{name}[/versions/{v}]`` (model
metadata), ``GET .../ready`` and ``POST .../infer``. Health stays with the service's other
health routes.

An infer body is JSON, or JSON followed by raw tensor bytes (the binary tensor data
extension, ``tritonclient``'s default): the ``Inference-Header-Content-Length`` header gives
the JSON's length and each binary input carries ``parameters.binary_data_size``. Outputs
come back binary when the request asks (``binary_data`` on an output, or
``binary_data_output`` for all), in the same layout. Tensors are read one per model input
(shape ``[rows]`` or ``[rows, 1]``) or as one ``[rows, inputs]`` matrix whose columns are
the model's inputs in signature order; a shape that disagrees with the data is refused.

Errors on these routes are the protocol's ``{"error": "..."}``; a request the model cannot
take is a 400.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

import plinth
from plinth.errors import InvalidArgument, NotFound, PayloadTooLarge, PlinthError
from plinth.serving import payload

if TYPE_CHECKING:
    from plinth.serving.model import ServedModel
    from plinth.serving.swap import ModelHolder

log = logging.getLogger("plinth.serving")

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
_NUMERIC = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = [*_NUMERIC, "BYTES"]

ReadBody = Callable[[Request], Awaitable[bytes]]
# (request, served model, columns, request id or None, start time) -> (predictions, request id)
Predict = Callable[
    [Request, "ServedModel", payload.Columns, "str | None", float], Awaitable[tuple[Any, str]]
]


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    columns: payload.Columns
    outputs: dict[str, bool] | None  # requested output -> binary; None: all outputs
    binary_output: bool  # the default for outputs that do not say


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: list[int]
    values: list[Any]  # flat, row-major


# -- requests ----------------------------------------------------------------------------


def parse_infer(body: bytes, header_length: str | None, input_names: list[str]) -> InferRequest:
    """An infer request: its JSON (the first ``header_length`` bytes, or all of the body)
    and the binary tensor data after it."""
    header, binary = _split_body(body, header_length)
    request = payload.parse_json(header)
    if not isinstance(request, dict):
        raise InvalidArgument('an infer request is a JSON object: {"inputs": [...]}')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f"the request id must be a string, not {request_id!r}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument('an infer request needs "inputs": [{name, shape, datatype, data}]')
    tensors, offset = [], 0
    for spec in inputs:
        tensor, used = _input(spec, binary[offset:])
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidArgument(
            f"the request has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    parameters = _parameters(request, "the request")
    return InferRequest(
        request_id,
        _columns(tensors, input_names),
        _requested_outputs(request.get("outputs")),
        _flag(parameters, "binary_data_output", "the request"),
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidArgument(
            f"{HEADER_LENGTH} is {header_length!r}: it must be the length of the JSON part "
            f"of the body (0 to {len(body)} bytes)"
        )
    return body[:length], memoryview(body)[length:]


def _input(spec: Any, binary: memoryview) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidArgument("each input needs a name, shape, datatype and data")
    name = spec["name"]
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidArgument(f"input {name!r}: shape must be a list of sizes, not {shape!r}")
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidArgument(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    expected = math.prod(shape)
    size = _parameters(spec, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
            raise InvalidArgument(
                f"input {name!r}: binary_data_size {size!r} does not fit the "
                f"{len(binary)} bytes of binary data left in the body"
            )
        values = _from_bytes(binary[:size], datatype, name)
    elif "data" in spec:
        values, size = _from_json(spec["data"], name), 0
    else:
        raise InvalidArgument(f"input {name!r} has neither data nor binary_data_size")
    if len(values) != expected:
        raise InvalidArgument(
            f"input {name!r}: shape {shape} holds {expected} values but {len(values)} were sent"
        )
    return Tensor(name, shape, values), size


def _from_json(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidArgument(f"input {name!r}: data must be a list")
    array = np.asarray(data, dtype=object)
    if any(isinstance(v, list) for v in array.flat):  # ragged: rows of different lengths
        raise InvalidArgument(f"input {name!r}: data is ragged (rows of different lengths)")
    return list(array.reshape(-1).tolist())


def _from_bytes(raw: memoryview, datatype: str, name: str) -> list[Any]:
    if datatype == "BYTES":
        return _bytes_elements(raw, name)
    dtype = np.dtype(_NUMERIC[datatype])
    if len(raw) % dtype.itemsize:
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes are not a whole number of {datatype} values"
        )
    return list(np.frombuffer(raw, dtype=dtype).tolist())


def _bytes_elements(raw: memoryview, name: str) -> list[Any]:
    # each element: its length as a little-endian uint32, then its bytes
    values, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise InvalidArgument(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, at)
        element = bytes(raw[at + 4 : at + 4 + length])
        if len(element) != length:
            raise InvalidArgument(f"input {name!r}: BYTES data ends inside an element")
        try:
            values.append(element.decode())
        except UnicodeDecodeError:
            raise InvalidArgument(f"input {name!r}: a BYTES element is not UTF-8 text") from None
        at += 4 + length
    return values


def _columns(tensors: list[Tensor], input_names: list[str]) -> payload.Columns:
    if len(tensors) == 1 and tensors[0].name not in input_names and len(tensors[0].shape) == 2:
        matrix = tensors[0]
        if matrix.shape[1] == len(input_names) > 0:  # one [rows, inputs] tensor
            width = matrix.shape[1]
            return {n: matrix.values[j::width] for j, n in enumerate(input_names)}
    columns: payload.Columns = {}
    for tensor in tensors:
        if math.prod(tensor.shape[1:]) != 1 or tensor.name in columns:
            raise InvalidArgument(
                f"input {tensor.name!r} with shape {tensor.shape}: send one tensor per model "
                f"input, shape [rows] or [rows, 1], or one [rows, {len(input_names)}] tensor "
                f"whose columns are {input_names}"
            )
        columns[tensor.name] = tensor.values
    return payload.check_columns(columns, "inputs")


def _requested_outputs(outputs: Any) -> dict[str, bool] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('"outputs" must be a list of {"name": ..., "parameters": {...}}')
    return {
        o["name"]: _flag(_parameters(o, f"output {o['name']!r}"), "binary_data", o["name"])
        for o in outputs
    }


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"the parameters of {what} must be a JSON object")
    return parameters


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} of {what} must be true or false, not {value!r}")
    return value


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) request body, as tritonclient compresses them; unpacking
    stops past ``limit`` bytes, so a small body cannot unpack into a huge one."""
    import zlib

    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise InvalidArgument(
            f"Content-Encoding {encoding!r} is not supported: use gzip, deflate or none"
        )
    unpacker = zlib.decompressobj(wbits)
    try:
        data = unpacker.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidArgument(f"the request body is not valid {encoding} data: {e}") from None
    if len(data) > limit or unpacker.unconsumed_tail:
        raise PayloadTooLarge(f"the request body unpacks to more than {limit} bytes")
    return data


# -- responses ---------------------------------------------------------------------------


def output_tensors(predictions: Any, name: str) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """One tensor per column of a DataFrame, else one named ``name``."""
    if hasattr(predictions, "columns"):
        return [(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    return [(name, np.asarray(predictions))]


def datatype_of(values: np.ndarray[Any, Any]) -> str:
    dtype = values.dtype
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iuf":
        kind = {"i": "INT", "u": "UINT", "f": "FP"}[dtype.kind]
        return f"{kind}{dtype.itemsize * 8}"
    return "BYTES"


def encode_outputs(
    predictions: Any, default_name: str, request: InferRequest
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The outputs' JSON and, for the binary ones, their bytes in the same order."""
    tensors = dict(output_tensors(predictions, default_name))
    wanted = request.outputs
    if wanted is None:
        wanted = {n: request.binary_output for n in tensors}
    unknown = [n for n in wanted if n not in tensors]
    if unknown:
        raise InvalidArgument(f"no output {unknown[0]!r}: this model's outputs are {list(tensors)}")
    outputs, blobs = [], []
    for name, binary in wanted.items():
        values = tensors[name]
        datatype = datatype_of(values)
        spec: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            blob = _to_bytes(values, datatype)
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            spec["data"] = [str(v) for v in values.reshape(-1).tolist()]
        else:
            spec["data"] = np.ascontiguousarray(values.reshape(-1))
        outputs.append(spec)
    return outputs, blobs


def _to_bytes(values: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in values.reshape(-1).tolist()]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    return np.ascontiguousarray(values, dtype=np.dtype(_NUMERIC[datatype])).tobytes()


def v2_type(dtype: str) -> str:
    """The protocol's datatype for a signature column's dtype."""
    if dtype.startswith("float"):
        return "FP64"
    if dtype.startswith(("int", "uint")):
        return "INT64"
    if dtype.startswith("bool"):
        return "BOOL"
    return "BYTES"


def error_response(error: PlinthError) -> Response:
    # a request the model cannot take is the protocol's 400; a too-large one stays a 413
    status = (
        400
        if isinstance(error, InvalidArgument) and not isinstance(error, PayloadTooLarge)
        else error.http_status
    )
    return Response(orjson.dumps({"error": str(error)}), status, media_type="application/json")


# -- routes ------------------------------------------------------------------------------


def _v2_errors(
    route: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    @functools.wraps(route)
    async def answered(*args: Any, **kwargs: Any) -> Response:
        try:
            return await route(*args, **kwargs)
        except PlinthError as error:
            return error_response(error)
        except Exception as error:  # never a stack trace, never the service's other shape
            log.error("open inference protocol route failed: %r", error)
            return error_response(PlinthError("the model service failed; see its log"))

    return answered


def mount(
    app: FastAPI,
    holder: ModelHolder,
    read_body: ReadBody,
    predict: Predict,
    max_body_bytes: int,
) -> None:
    """The protocol's routes on the model service ``app``; a compressed body may unpack to
    ``max_body_bytes`` at most."""

    def served_as(name: str, version: str | None) -> ServedModel:
        served = holder.current  # this request's version, whatever swaps meanwhile
        if name != served.name:
            raise NotFound(f"this service serves model {served.name!r}, not {name!r}")
        if version is not None and version != str(served.version.version):
            raise NotFound(
                f"this service serves {served.name} version {served.version.version}, "
                f"not version {version!r}"
            )
        return served

    @app.get("/v2")
    @_v2_errors
    async def server_metadata() -> Response:
        body = {"name": "plinth", "version": plinth.__version__, "extensions": EXTENSIONS}
        return _json(body, None)

    async def model_metadata(name: str, version: str | None = None) -> Response:
        served = served_as(name, version)
        signature = served.predictor.signature
        inputs = [] if signature is None else signature.inputs
        outputs = [] if signature is None else signature.outputs
        body = {
            "name": served.name,
            "versions": [str(served.version.version)],
            "platform": f"plinth-{served.predictor.manifest.flavor}",
            "inputs": [
                {"name": c.name, "datatype": v2_type(c.dtype), "shape": [-1]} for c in inputs
            ],
            "outputs": [
                {"name": c.name, "datatype": v2_type(c.dtype), "shape": [-1]} for c in outputs
            ]
            or [{"name": output_name(served), "datatype": "FP64", "shape": [-1]}],
        }
        return _json(body, served)

    async def model_ready(name: str, version: str | None = None) -> Response:
        served = served_as(name, version)
        return _json({"name": name, "ready": True}, served)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        started = time.perf_counter()
        served = served_as(name, version)
        body = await read_body(request)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            body = decompress(body, encoding, max_body_bytes)
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), served.input_names)
        result, request_id = await predict(request, served, parsed.columns, parsed.id, started)
        outputs, blobs = encode_outputs(result, output_name(served), parsed)
        answer = {
            "model_name": served.name,
            "model_version": str(served.version.version),
            "id": request_id,
            "outputs": outputs,
        }
        if not blobs:
            return _json(answer, served)
        header = payload.dumps(answer)
        headers = {HEADER_LENGTH: str(len(header)), "x-model-version": str(served.version.version)}
        return Response(
            b"".join([header, *blobs]), media_type="application/octet-stream", headers=headers
        )

    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.get(base)(_v2_errors(model_metadata))
        app.get(f"{base}/ready")(_v2_errors(model_ready))
        app.post(f"{base}/infer")(_v2_errors(infer))


def output_name(served: ServedModel) -> str:
    signature = served.predictor.signature
    outputs = [] if signature is None else signature.outputs
    return outputs[0].name if len(outputs) == 1 else "predict"


def _json(value: Any, served: ServedModel | None) -> Response:
    headers = {} if served is None else {"x-model-version": str(served.version.version)}
    return Response(payload.dumps(value), media_type="application/json", headers=headers)

"""A step's output, stored with its pipeline run's tracking run and read back.

Kinds, tried in order: ``none``; ``arrow`` (a ``pyarrow.Table``, as Parquet); ``pandas``
(a DataFrame, as Parquet, unless Arrow cannot hold it: a column of mixed types is
pickled); references to the registry and feature store, resolved again
through the client when read (``model_version``, ``training_dataset`` and
``training_data`` (its handle), ``feature_view`` and ``feature_view_handle``); ``json``
(a value JSON gives back equal, type included); else ``pickle`` (cloudpickle: read back
only where the reader trusts the run's code, i.e. by the runner of the same pipeline).

Each stored output is described by a dict kept in ``pipeline_steps.output``:
``{"kind", "path", "run_id", "sha256", "summary"}``; ``path`` is the artifact path in the
tracking run ``run_id`` (None for ``none`` and references), ``sha256`` identifies the
value (of the stored bytes, or of the reference), ``summary`` is a short description.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plinth.errors import InvalidArgument

if TYPE_CHECKING:
    from plinth.client import Client

_REPR = 200


def output_folder(step: str) -> str:
    return f"pipeline/{step}"


def store_output(client: Client, run_id: str, step: str, value: Any) -> dict[str, Any]:
    """Store ``value`` as step ``step``'s output in tracking run ``run_id``; its description."""
    kind, data, extension, summary = encode(value)
    if kind == "none" or kind in _REFERENCES:
        digest = hashlib.sha256(data).hexdigest()
        ref = json.loads(data) if kind != "none" else None
        return {"kind": kind, "path": None, "run_id": None, "sha256": digest,
                "summary": summary, "ref": ref}  # fmt: skip
    path = f"{output_folder(step)}/output.{extension}"
    client.upload_artifact_bytes(run_id, data, path)
    return {
        "kind": kind,
        "path": path,
        "run_id": run_id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "summary": summary,
    }


def load_value(client: Client, output: dict[str, Any], *, trust_pickle: bool = False) -> Any:
    """The value an output description stands for."""
    kind = output.get("kind")
    if kind not in KINDS:
        raise InvalidArgument(f"unknown output kind {kind!r}; this Plinth reads {', '.join(KINDS)}")
    if kind == "none":
        return None
    if kind in _REFERENCES:
        return _REFERENCES[kind][1](client, output["ref"])
    if kind == "pickle" and not trust_pickle:
        raise InvalidArgument(
            f"the output at {output.get('path')} is a pickle, which runs code when read; "
            "read it with trust_pickle=True only if you trust the pipeline that wrote it"
        )
    data = client.read_artifact(output["run_id"], output["path"])
    if kind in ("arrow", "pandas"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        return table if kind == "arrow" else table.to_pandas()
    if kind == "json":
        return json.loads(data)
    import cloudpickle  # type: ignore[import-untyped]

    return cloudpickle.loads(data)


def encode(value: Any) -> tuple[str, bytes, str, dict[str, Any]]:
    """``value``'s kind, its stored bytes, their file extension and a summary."""
    if value is None:
        return "none", b"null", "", {}
    table_kind = _table_kind(value)
    table = _as_table(value) if table_kind is not None else None
    if table_kind is not None and table is not None:
        import pyarrow.parquet as pq

        out = io.BytesIO()
        pq.write_table(table, out)
        summary = {"rows": table.num_rows, "columns": table.column_names[:100]}
        return table_kind, out.getvalue(), "parquet", summary
    for kind, (dump, _load) in _REFERENCES.items() if _is_plinth(value) else ():
        ref = dump(value)
        if ref is not None:
            data = json.dumps(ref, sort_keys=True).encode()
            return kind, data, "", {"repr": _short(ref)}
    as_json = _as_json(value)
    if as_json is not None:
        return "json", as_json, "json", {"repr": _short(value)}
    import cloudpickle

    return "pickle", cloudpickle.dumps(value), "pkl", {"type": _type_name(value),
                                                       "repr": _short(value)}  # fmt: skip


def _as_table(value: Any) -> Any:
    """``value`` as an Arrow table; None for a DataFrame Arrow cannot hold (a column of
    mixed types): it is pickled instead."""
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    try:
        return pa.Table.from_pandas(value)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _table_kind(value: Any) -> str | None:
    module = type(value).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        return "arrow" if isinstance(value, pa.Table) else None
    if module.startswith("pandas"):
        import pandas as pd  # type: ignore[import-untyped]

        return "pandas" if isinstance(value, pd.DataFrame) else None
    return None


def _as_json(value: Any) -> bytes | None:
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    back = json.loads(text)
    return text.encode() if back == value and _same_types(back, value) else None


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR else text[: _REPR - 3] + "..."


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


# -- references --------------------------------------------------------------------------


def _model_version(value: Any) -> dict[str, Any] | None:
    from plinth.registry.types import ModelVersion

    if isinstance(value, ModelVersion):
        return {"model": value.model_name, "version": value.version}
    return None


def _training_dataset(value: Any) -> dict[str, Any] | None:
    from plinth.features.types import TrainingDataset

    return {"id": value.id} if isinstance(value, TrainingDataset) else None


def _training_data(value: Any) -> dict[str, Any] | None:
    from plinth.features.datasets import TrainingData

    return {"id": value.info.id} if isinstance(value, TrainingData) else None


def _feature_view(value: Any) -> dict[str, Any] | None:
    from plinth.features.types import FeatureView

    if isinstance(value, FeatureView):
        return {"name": value.name, "version": value.version}
    return None


def _feature_view_handle(value: Any) -> dict[str, Any] | None:
    from plinth.features.datasets import ViewHandle

    if isinstance(value, ViewHandle):
        return {"name": value.view.name, "version": value.view.version}
    return None


def _is_plinth(value: Any) -> bool:
    return type(value).__module__.startswith("plinth.")


Dump = Callable[[Any], "dict[str, Any] | None"]
Load = Callable[["Client", dict[str, Any]], Any]

_REFERENCES: dict[str, tuple[Dump, Load]] = {
    "model_version": (
        _model_version,
        lambda client, ref: client.get_model_version(ref["model"], ref["version"]),
    ),
    "training_dataset": (
        _training_dataset,
        lambda client, ref: client.features.get_training_dataset(ref["id"]),
    ),
    "training_data": (
        _training_data,
        lambda client, ref: client.feature_store().get_training_dataset(ref["id"]),
    ),
    "feature_view": (
        _feature_view,
        lambda client, ref: client.features.get_feature_view(ref["name"], ref["version"]),
    ),
    "feature_view_handle": (
        _feature_view_handle,
        lambda client, ref: client.feature_store().get_feature_view(ref["name"], ref["version"]),
    ),
}
KINDS = ("none", "arrow", "pandas", *_REFERENCES, "json", "pickle")

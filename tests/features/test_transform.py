"""On-demand transformations: stored as their source text and that text is what runs; a
pickle (of records written by older versions) is never loaded; the compiled functions are
cached by source, the cache bounded."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import math
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import TypeAdapter
from sqlalchemy import update

import plinth
from plinth.errors import InvalidArgument
from plinth.features import transform
from plinth.features.store import FeatureStore
from plinth.features.transform import apply, transformation
from plinth.features.types import FeatureSpec, Transformation
from plinth.store.schema import feature_views
from tests.backends import local_client
from tests.features.conftest import day, define, transactions

FACTOR = 3
TABLE = pa.table({"x": [1.0, 4.0]})


@plinth.on_demand(inputs=["x"], outputs={"root": "float64"})
def root(df: pd.DataFrame) -> pd.Series:
    import statistics  # an import in the body travels with the source

    assert statistics.mean([1, 3]) == 2
    return np.sqrt(df["x"]) + math.floor(0.5) + len(pd.Series([], dtype="float64"))


def _out(t: Transformation, table: pa.Table = TABLE) -> list[Any]:
    return apply([t], table, "v:v1").column(t.outputs[0].name).to_pylist()


def by_hand(source: str, name: str = "t", output: str = "y") -> Transformation:
    """A transformation as a record holds it (or a caller that is not Python sends it)."""
    return Transformation(name, ["x"], [FeatureSpec(output, "float64")], source)


def test_the_source_is_stored_without_decorators_and_runs() -> None:
    assert root.source.startswith("def root(df: pd.DataFrame) -> pd.Series:\n")
    assert "on_demand" not in root.source
    assert _out(root) == [1.0, 2.0]


def test_the_stored_source_is_what_runs_not_the_function_it_came_from() -> None:
    changed = replace(root, source=root.source.replace('np.sqrt(df["x"])', 'df["x"] * 10'))
    assert changed.source != root.source
    assert _out(changed) == [10.0, 40.0]


def scaled(factor: int) -> Any:
    def by_factor(df: pd.DataFrame) -> pd.Series:
        return df["x"] * factor

    return by_factor


def uses_a_global(df: pd.DataFrame) -> pd.Series:
    return df["x"] * FACTOR


def test_closures_and_globals_are_refused_when_defined() -> None:
    with pytest.raises(InvalidArgument, match=r"the variables \['factor'\] of the function"):
        transformation(scaled(2), ["x"], {"y": "float64"})
    with pytest.raises(InvalidArgument, match=r"the names \['FACTOR'\], defined outside it"):
        transformation(uses_a_global, ["x"], {"y": "float64"})


def logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(df: pd.DataFrame) -> Any:
        print("called")
        return fn(df)

    return wrapper


def root_of(df: pd.DataFrame) -> pd.Series:
    return np.sqrt(df["x"])


def test_lambdas_and_functions_without_source_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"cannot be a lambda.*define it with def"):
        transformation(lambda df: df["x"], ["x"], {"y": "float64"})
    namespace: dict[str, Any] = {}
    exec("def typed_in(df):\n    return df['x']\n", namespace)
    with pytest.raises(InvalidArgument, match="source of 'typed_in' cannot be read"):
        transformation(namespace["typed_in"], ["x"], {"y": "float64"})
    with pytest.raises(InvalidArgument, match="is wrapped by a decorator"):
        transformation(logged(root_of), ["x"], {"y": "float64"})
    with pytest.raises(InvalidArgument, match="not int"):
        transformation(42, ["x"], {"y": "float64"})  # type: ignore[arg-type]


datetime = dt.datetime  # as after `from datetime import datetime`
sum = math.fsum  # a module shadowing a builtin


def reads_the_datetime_class(df: pd.DataFrame) -> pd.Series:
    return df["x"] * datetime.now().year


def reads_a_shadowed_builtin(df: pd.DataFrame) -> pd.Series:
    return df["x"] * sum([1.0])


def test_a_provided_name_bound_to_something_else_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"'datetime'.*but the module datetime where"):
        transformation(reads_the_datetime_class, ["x"], {"y": "float64"})
    with pytest.raises(InvalidArgument, match=r"'sum'.*but the builtin where"):
        transformation(reads_a_shadowed_builtin, ["x"], {"y": "float64"})


def test_annotations_and_nested_scopes_need_no_outside_names() -> None:
    source = (
        "def t(df: Frame, n: Count = 2) -> Out:\n"
        "    total: Number = 0\n"
        "    def double(v: Value) -> Value:\n"
        "        return v * n\n"
        "    return pd.Series([double(v) + total for v in df['x']])\n"
    )
    assert _out(by_hand(source)) == [2.0, 8.0]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def t(df):\n    return df['x'] * FACTOR\n", r"uses the names \['FACTOR'\]"),
        ("t = lambda df: df['x']\n", "exactly one function defined with def"),
        ("import os\ndef t(df):\n    return df['x']\n", "exactly one function"),
        ("def t(df:\n", "does not parse"),
        ("", "carries no source"),
        pytest.param("def t(df):\n    return " + "-" * 100_000 + "df\n", "parse", id="deep"),
    ],
)
def test_a_stored_source_that_cannot_run_alone_is_refused(source: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _out(by_hand(source))


class _Marker:
    """A pickle that touches a file when it is loaded: proof of whether a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


def legacy_record(marker: Path, source: str | None) -> dict[str, Any]:
    """A transformation as versions before sources ran stored it: a base64 cloudpickle in
    ``code``, its text (with the decorator) in ``source``, or no source at all."""
    record: dict[str, Any] = {
        "name": "ratio",
        "inputs": ["x"],
        "outputs": [{"name": "y", "dtype": "float64", "description": "", "tags": {}}],
        "code": base64.b64encode(pickle.dumps(_Marker(marker))).decode(),
    }
    if source is not None:
        record["source"] = source
    return record


LEGACY_SOURCE = (
    '@plinth.on_demand(inputs=["x"], outputs={"y": "float64"}, name="ratio")\n'
    "def ratio(df):\n"
    '    return df["x"] / 2\n'
)


def test_the_legacy_pickle_would_have_run(tmp_path: Path) -> None:
    # the control for the tests below: loading this record's pickle does touch the marker
    pickle.loads(base64.b64decode(legacy_record(tmp_path / "ran", None)["code"]))
    assert (tmp_path / "ran").exists()


def test_a_legacy_record_runs_its_source_never_its_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    raw = json.dumps([legacy_record(marker, LEGACY_SOURCE)])
    (stored,) = TypeAdapter(list[Transformation]).validate_json(raw)
    assert _out(stored) == [0.5, 2.0]
    assert not marker.exists()


def test_a_legacy_record_without_source_is_refused_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    raw = json.dumps([legacy_record(marker, None)])
    (stored,) = TypeAdapter(list[Transformation]).validate_json(raw)
    with pytest.raises(InvalidArgument, match=r"of v:v1 cannot run.*Re-create the view version"):
        _out(stored)
    assert not marker.exists()


def test_a_legacy_view_in_the_store_serves_its_source(tmp_path: Path) -> None:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    client.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    fs: FeatureStore = client.feature_store()
    define(fs).insert(transactions())  # type: ignore[attr-defined]

    @plinth.on_demand(inputs=["orders_30d"], outputs={"y": "float64"}, name="ratio")
    def ratio(df: pd.DataFrame) -> pd.Series:
        return df["orders_30d"] * 1.0

    fs.create_feature_view("v", ["customer_stats:orders_30d"], transformations=[ratio])
    marker = tmp_path / "pickle-ran"
    record = legacy_record(marker, LEGACY_SOURCE.replace('"x"', '"orders_30d"'))
    record["inputs"] = ["orders_30d"]
    with fs.service.store.write() as conn:  # type: ignore[attr-defined]
        conn.execute(update(feature_views).values(transformations=json.dumps([record])))
    view = fs.get_feature_view("v")
    entity = pd.DataFrame({"customer_id": [1], "event_timestamp": pd.to_datetime([day(11)])})
    assert view.get_historical_features(entity).to_pandas().y.tolist() == [2.5]
    fs.materialize("customer_stats")
    assert view.get_online_features([{"customer_id": 1}], now=day(11)).rows[0]["y"] == 2.5
    assert not marker.exists()


def test_compiled_functions_are_kept_for_the_latest_used_sources_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transform, "LOADED_MAX", 3)
    monkeypatch.setattr(transform, "_loaded", transform.OrderedDict())
    made = [by_hand(f"def t(df):\n    return df['x'] * {n}\n") for n in range(5)]
    first = transform._function(made[0], "v:v1")
    assert transform._function(made[0], "v:v1") is first  # compiled once
    for t in made[1:]:
        transform._function(t, "v:v1")
        transform._function(made[0], "v:v1")  # used again: stays
    assert list(transform._loaded) == [made[3].source, made[4].source, made[0].source]
    assert transform._function(made[0], "v:v1") is first
    assert _out(made[1]) == [1.0, 4.0]  # dropped, so compiled again from its source
    assert made[2].source not in transform._loaded
    renamed = replace(made[0], name="another")
    assert transform._function(renamed, "v:v1") is first  # the key is the source text


@pytest.mark.parametrize("odd", ["\x0c", "\x1c", "\x85", "\u2028", "\r"])
def test_a_source_with_other_line_breaks_is_refused_so_the_shown_code_is_the_run_code(
    odd: str,
) -> None:
    from plinth.features.source import check_source, load

    hidden = (
        f'@d  # {odd}def f(a): print("HIDDEN CODE RAN"); return a; """\n'
        'def f(a):\n    s = "x"  # """\n    return a\n'
    )
    with pytest.raises(InvalidArgument, match="line or page breaks other than newlines"):
        check_source(hidden, "f")
    with pytest.raises(InvalidArgument, match="line or page breaks"):
        load(hidden, "f", "view v1")

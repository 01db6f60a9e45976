"""``@step``: a function made a step, with its parameters and code version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.errors import InvalidArgument
from plinth.pipelines.entrypoints import load_pipeline
from plinth.pipelines.step import Step, step


def test_the_bare_decorator_keeps_the_function() -> None:
    @step
    def get_data(context: Any, since: str = "2026-01-01") -> str:
        """Rows since a day."""
        return since

    assert isinstance(get_data, Step)
    assert get_data.name == "get_data"
    assert get_data.parameters == ("context", "since")
    assert get_data.defaults == {"since": "2026-01-01"}
    assert (get_data.cache, get_data.timeout_seconds) == (False, None)
    assert get_data(None, since="x") == "x"  # still callable as a function
    assert get_data.__doc__ == "Rows since a day."


def test_the_decorator_with_options() -> None:
    @step(name="fit", cache=True, timeout_seconds=600.0)
    def train(get_data: int) -> int:
        return get_data

    assert (train.name, train.cache, train.timeout_seconds) == ("fit", True, 600.0)
    assert plinth.step is step


def test_the_code_version_follows_the_source() -> None:
    def make(offset: int) -> Step:
        if offset:

            @step(name="s")
            def changed(x: int) -> int:
                return x + 1

            return changed

        @step(name="s")
        def original(x: int) -> int:
            return x

        return original

    first, again, changed = make(0), make(0), make(1)
    assert len(first.code_version) == 64
    assert first.code_version == again.code_version
    assert first.code_version != changed.code_version


def test_a_function_without_source_still_has_a_code_version() -> None:
    namespace: dict[str, Any] = {}
    exec("def made(x):\n    return x\n", namespace)
    assert len(step(namespace["made"]).code_version) == 64


@pytest.mark.parametrize(
    ("name", "match"),
    [("context", "other than 'context'"), ("not valid", "identifier"), ("", "identifier")],
)
def test_a_step_name_must_be_an_identifier(name: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        step(name=name)(lambda: 1)


def test_star_parameters_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"step 'many': parameter \*rest"):

        @step
        def many(*rest: int) -> None: ...

    with pytest.raises(InvalidArgument, match=r"parameter \*options"):

        @step
        def keywords(**options: int) -> None: ...


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(InvalidArgument, match="step 'slow': timeout_seconds"):
        step(name="slow", timeout_seconds=0)(lambda: 1)


def test_only_functions_are_steps() -> None:
    with pytest.raises(InvalidArgument, match="decorates a function"):
        step(42)  # type: ignore[call-overload]


def _doubled(x: int) -> int:
    return 2 * x


def _tripled(x: int) -> int:
    return 3 * x


def test_a_factory_made_step_versions_what_it_closes_over() -> None:
    def scaled(fit: Any, factor: float, option: object) -> Step:
        @step(name="train")
        def train(get_data: int) -> Any:
            return fit(get_data) * factor, option

        return train

    first = scaled(_doubled, 1.0, object())
    assert first.code_version == scaled(_doubled, 1.0, object()).code_version  # no addresses
    assert first.code_version != scaled(_tripled, 1.0, object()).code_version
    assert first.code_version != scaled(_doubled, 2.0, object()).code_version


FLOW = """import json
import plinth

FACTOR = {factor}


def clean(x):
    return [{clean} for v in x]


def outer(x):
    return clean(x)


@plinth.step(cache=True)
def prep():
    return outer([1, 2]), json.dumps(FACTOR), prep


pipeline = plinth.Pipeline("helper", [prep])
"""


def test_the_code_version_follows_the_helpers_a_step_calls(tmp_path: Path) -> None:
    def version_of(factor: str, clean: str = "v * FACTOR") -> str:
        # each text of a different length: the source is read again (not a stale cache)
        path = tmp_path / f"flow_{len(factor)}_{len(clean)}.py"
        path.write_text(FLOW.format(factor=factor, clean=clean))
        return load_pipeline(f"{path}:pipeline").step("prep").code_version

    first = version_of("1")
    assert version_of("100") != first  # a constant it reads
    assert version_of("1", "v * FACTOR + 1") != first  # a helper of the helper it calls
    assert version_of("1") == first
    # the same in another process: nothing that changes between processes (addresses)
    path = tmp_path / "flow_1_10.py"
    program = (
        "from plinth.pipelines.entrypoints import load_pipeline; "
        f"print(load_pipeline({str(path)!r} + ':pipeline').step('prep').code_version)"
    )
    other = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == first


def test_a_function_without_source_is_versioned_by_its_code_and_names() -> None:
    def version_of(source: str) -> str:
        namespace: dict[str, Any] = {"clean": _doubled, "dirty": _tripled}
        exec(source, namespace)
        return step(namespace["made"]).code_version

    nested = "def made(x):\n    return (lambda y: {}(y))(x)\n"
    assert version_of(nested.format("clean")) == version_of(nested.format("clean"))
    assert version_of(nested.format("clean")) != version_of(nested.format("dirty"))

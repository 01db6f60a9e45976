"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def example(heading: str) -> str:
    """The first ```python block after ``heading``."""
    text = README.read_text()
    section = text[text.index(heading) :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, f"no python block after {heading!r}"
    return found.group(1)


def run_example(heading: str, tmp_path: Path) -> str:
    """Run the example after ``heading`` as a script on a fresh embedded store, in
    ``tmp_path`` (where it may write files); what it printed."""
    script = tmp_path / "example.py"
    script.write_text(example(heading))
    env = {**os.environ, "PLINTH_HOME": str(tmp_path / "home")}
    for name in ("PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_ONLINE_URI", "PLINTH_URI"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_feature_store_example(tmp_path: Path) -> None:
    stdout = run_example("## Feature store", tmp_path)
    assert "'amount_vs_avg': 'PRESENT'" in stdout
    assert "ModelUse(model='churn', version=1" in stdout


def test_relative_links_resolve_inside_the_repository() -> None:
    root = README.parent.resolve()
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert local, "the README links to no file of the repository"
    for link in local:
        target = (root / link).resolve()
        assert target.is_relative_to(root), f"{link} points outside the repository"
        assert target.exists(), f"{link} does not exist in the repository"


def test_the_first_command_installs_what_the_examples_import() -> None:
    text = README.read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first is not None
    named = re.search(r"\.\[([\w,]+)\]", first.group(1))
    extras = set(named.group(1).split(",")) if named else set()
    # what an extra brings, by the import name the examples use
    provided = {
        "sklearn": "sklearn",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
        "torch": "pytorch",
    }
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    imported = {
        name for block in blocks for name in re.findall(r"^(?:from|import) (\w+)", block, re.M)
    }
    for module, extra in provided.items():
        if module in imported:
            assert extra in extras, (
                f"the examples import {module}; the first command lacks .[{extra}]"
            )


def test_the_monitoring_example(tmp_path: Path) -> None:
    stdout = run_example("## Monitoring", tmp_path)
    lines = stdout.splitlines()
    assert lines[0] == "1 of 3 columns drifted (33%)"
    assert lines[1].startswith("age wasserstein") and lines[1].split()[3] == "True"
    assert lines[4:7] == ["0 None", "1 0", "2 1"]  # the first insert has nothing to compare with
    assert lines[7].startswith("breach - ") and lines[7].endswith("(plan)")


def test_the_pipelines_example(tmp_path: Path) -> None:
    # it writes its Parquet input and Delta scores beside itself
    stdout = run_example("## Pipelines and retraining", tmp_path)
    assert stdout.splitlines() == [
        "succeeded ['get_data', 'transform', 'validate_data', 'train', 'validate_model', "
        "'champion_challenger']",
        "kept 2 0.94 1",
        "promoted 1 0.966 None",
        "delivered 500 rows",
    ]

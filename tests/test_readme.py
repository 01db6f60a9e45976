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


def test_the_feature_store_example(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example("## Feature store"))
    env = {**os.environ, "PLINTH_HOME": str(tmp_path / "home")}
    for name in ("PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_ONLINE_URI", "PLINTH_URI"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "'amount_vs_avg': 'PRESENT'" in done.stdout
    assert "ModelUse(model='churn', version=1" in done.stdout

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

import plinth
from plinth.tracking import lineage


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_dirty_and_remote_of_the_calling_script(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    git("config", "user.email", "a@b.c", cwd=repo)
    git("config", "user.name", "a", cwd=repo)
    git("remote", "add", "origin", "https://example.invalid/team/churn.git", cwd=repo)
    script = repo / "train.py"
    script.write_text(
        "import plinth\n"
        "with plinth.start_run(experiment='churn') as run:\n"
        "    pass\n"
        "print(run.id)\n"
    )
    git("add", "train.py", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    commit = git("rev-parse", "HEAD", cwd=repo)
    home = tmp_path / "home"

    def train() -> plinth.tracking.types.Run:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={"PLINTH_HOME": str(home), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        return plinth.connect(store_uri=f"sqlite:///{home / 'plinth.db'}").get_run(
            done.stdout.strip()
        )

    clean = train()
    assert clean.lineage.git_commit == commit
    assert clean.lineage.git_dirty is False
    assert clean.lineage.git_remote == "https://example.invalid/team/churn.git"
    assert clean.lineage.entry_point == str(script)
    script.write_text(script.read_text() + "# edited\n")
    assert train().lineage.git_dirty is True


def test_outside_git_there_is_no_commit(tmp_path: Path) -> None:
    assert lineage._code_lineage(str(tmp_path)) == (None, None, None)


def test_environment_is_content_addressed() -> None:
    env = lineage.capture_environment()
    assert len(env.digest) == 64 and env.packages["pytest"]
    assert lineage.capture_environment().digest == env.digest


def test_seed_everything_seeds_random_and_numpy() -> None:
    import numpy

    plinth.seed_everything(5)
    a = (random.random(), numpy.random.rand())
    plinth.seed_everything(5)
    assert (random.random(), numpy.random.rand()) == a


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", True])
def test_bad_seeds(seed: object) -> None:
    with pytest.raises(plinth.InvalidArgument, match="seed"):
        plinth.seed_everything(seed)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        (
            "https://oauth2:glpat-SECRET@gitlab.example/team/churn.git",
            "https://gitlab.example/team/churn.git",
        ),
        ("https://github.example/team/churn.git", "https://github.example/team/churn.git"),
        ("git@github.example:team/churn.git", "git@github.example:team/churn.git"),
    ],
)
def test_remote_urls_lose_their_credentials(url: str, clean: str) -> None:
    assert lineage._without_credentials(url) == clean

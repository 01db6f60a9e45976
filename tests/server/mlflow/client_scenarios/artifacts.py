"""Artifacts through the proxy: log_artifact, log_artifacts, log_text/log_dict, a binary
file of a few MB, list_artifacts, download_artifacts (a file, a folder, the whole run)."""

from __future__ import annotations

import filecmp
import os
import tempfile
from pathlib import Path

import mlflow
from _scenario import check, equal, expect_error, report, unique
from mlflow import MlflowClient

client = MlflowClient()
mlflow.set_experiment(unique("artifacts"))
work = Path(tempfile.mkdtemp())
(work / "a.txt").write_text("alpha\n")
tree = work / "tree"
(tree / "sub").mkdir(parents=True)
(tree / "b.txt").write_text("beta\n")
(tree / "sub" / "c.csv").write_text("x,y\n1,2\n")
blob = os.urandom(3 * 1024 * 1024 + 7)
(work / "blob.bin").write_bytes(blob)

with mlflow.start_run() as run:
    mlflow.log_artifact(str(work / "a.txt"))
    mlflow.log_artifact(str(work / "a.txt"), artifact_path="copies")
    mlflow.log_artifacts(str(tree), artifact_path="data")
    mlflow.log_artifact(str(work / "blob.bin"), artifact_path="bin")
    mlflow.log_text("hello", "notes/readme.md")
    mlflow.log_dict({"depth": 3}, "config.json")
run_id = run.info.run_id


def listing(path: str | None = None) -> list[tuple[str, bool, int | None]]:
    entries = client.list_artifacts(run_id, path)
    return sorted((f.path, f.is_dir, None if f.is_dir else f.file_size) for f in entries)


root = [
    ("a.txt", False, 6),
    ("bin", True, None),
    ("config.json", False, len(mlflow.artifacts.load_text(f"runs:/{run_id}/config.json"))),
    ("copies", True, None),
    ("data", True, None),
    ("notes", True, None),
]
equal(listing(), root, "list_artifacts at the root")
equal(listing("data"), [("data/b.txt", False, 5), ("data/sub", True, None)], "list data")
equal(listing("data/sub"), [("data/sub/c.csv", False, 8)], "list data/sub")
equal(listing("bin"), [("bin/blob.bin", False, len(blob))], "list bin")
equal(listing("nothing-here"), [], "list a missing folder")

dest = Path(tempfile.mkdtemp())
got = Path(client.download_artifacts(run_id, "data", str(dest)))
check(filecmp.cmp(got / "b.txt", tree / "b.txt", shallow=False), "downloaded data/b.txt")
check(filecmp.cmp(got / "sub" / "c.csv", tree / "sub" / "c.csv", shallow=False), "c.csv")
got = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bin/blob.bin")
equal(Path(got).read_bytes() == blob, True, "the binary file downloaded")
whole = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/"))
equal(
    sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file()),
    [
        "a.txt",
        "bin/blob.bin",
        "config.json",
        "copies/a.txt",
        "data/b.txt",
        "data/sub/c.csv",
        "notes/readme.md",
    ],
    "the whole run downloaded",
)
equal(mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.md"), "hello", "load_text")
equal(mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json"), {"depth": 3}, "load_dict")
expect_error("RESOURCE_DOES_NOT_EXIST", client.download_artifacts, run_id, "gone.txt", str(dest))

report({"run_id": run_id, "blob_size": len(blob)})

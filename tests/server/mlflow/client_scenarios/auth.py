"""A Plinth server with authentication on: the mlflow client signs in with
MLFLOW_TRACKING_TOKEN (a Plinth token, sent as a bearer token); an editor logs a run and
its artifacts, a viewer reads them but may not write (PERMISSION_DENIED, 403 from the
artifact proxy), a client without a token is UNAUTHENTICATED.

Plinth-only: MLflow's own server has no such tokens. The tokens come in PLINTH_TEST_EDITOR_TOKEN
and PLINTH_TEST_VIEWER_TOKEN.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import requests
from _scenario import check, equal, expect_error, report, unique
from mlflow import MlflowClient

EDITOR = os.environ["PLINTH_TEST_EDITOR_TOKEN"]
VIEWER = os.environ["PLINTH_TEST_VIEWER_TOKEN"]


def client_of(token: str | None) -> MlflowClient:
    # the client reads the variable on every request
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    return MlflowClient()


work = Path(tempfile.mkdtemp())
(work / "f.txt").write_text("x")

editor = client_of(EDITOR)
exp_id = editor.create_experiment(unique("auth"))
run_id = editor.create_run(exp_id).info.run_id
editor.log_param(run_id, "p", "1")
editor.log_artifact(run_id, str(work / "f.txt"))
equal(editor.get_run(run_id).info.user_id, "ed", "the run's user is the token's")

viewer = client_of(VIEWER)
equal(viewer.get_run(run_id).data.params, {"p": "1"}, "a viewer reads the run")
equal([a.path for a in viewer.list_artifacts(run_id)], ["f.txt"], "a viewer lists artifacts")
got = viewer.download_artifacts(run_id, "f.txt", str(work / "down"))
equal(Path(got).read_text(), "x", "a viewer downloads")
expect_error("PERMISSION_DENIED", viewer.log_param, run_id, "q", "2")
expect_error("PERMISSION_DENIED", viewer.create_experiment, unique("viewer"))
try:
    viewer.log_artifact(run_id, str(work / "f.txt"), "viewer")
except requests.HTTPError as exc:
    equal(exc.response.status_code, 403, "a viewer's upload")
else:
    check(False, "a viewer uploaded an artifact")

anonymous = client_of(None)
expect_error("UNAUTHENTICATED", anonymous.get_run, run_id)
expect_error("UNAUTHENTICATED", anonymous.search_experiments)

report({"run_id": run_id})

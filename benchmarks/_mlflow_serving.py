"""MLflow half of the serving benchmark (a worker; run with the MLflow venv's python).

    benchmarks/.venvs/mlflow/bin/python benchmarks/_mlflow_serving.py \\
        --workload serve_w1 --n 500 --tmp /tmp/x

Reads ``benchmarks/.work/serving/plan.json`` like ``_plinth_serving.py``. ``setup`` logs the
pickled model with ``mlflow.sklearn.log_model`` into a SQLite store (registered as
``bench``, alias ``live``); ``serve_w1`` / ``serve_w2`` measure ``mlflow models serve -m
models:/bench@live --env-manager local`` with one or two uvicorn workers.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import serving as S

warnings.simplefilter("ignore")  # MLflow's deprecation and schema warnings say nothing here


def _env() -> dict[str, str]:
    home = Path(S.plan()["mlflow_home"])
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


def w_setup(n: int, tmp: Path) -> dict:
    _env()
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.tracking import MlflowClient

    p = S.plan()
    notes = []
    if sklearn.__version__ != p["sklearn"]:
        notes.append(
            f"scikit-learn {sklearn.__version__} here, the model was pickled with {p['sklearn']}"
        )
    model = S.load_model(p["model_pickle"])
    X, _ = S.make_data(5, S.SEED)
    home = Path(p["mlflow_home"])
    client = MlflowClient()
    exp = client.create_experiment("bench", artifact_location=(home / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=X,
            registered_model_name=S.MODEL_NAME,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            # MLflow 3 saves with skops, which refuses tree types unless they are trusted
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    client.set_registered_model_alias(S.MODEL_NAME, S.ALIAS, 1)
    return {"figures": {"version": 1}, "notes": notes}


def w_serve(n: int, tmp: Path, workers: int) -> dict:
    env = _env()
    bin_dir = Path(sys.executable).parent
    mlflow_cli = str(bin_dir / "mlflow")
    # as with the venv activated: MLflow starts `uvicorn` from the PATH
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"

    def command(port: int) -> list[str]:
        cmd = [mlflow_cli, "models", "serve", "-m", S.URI, "--env-manager", "local"]
        return [*cmd, "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]

    return S.measure_server(command, env, tmp, "/ping", "/invocations")


def _versions() -> str:
    import fastapi
    import mlflow
    import numpy
    import pandas
    import sklearn
    import uvicorn

    return (
        f"{mlflow.__version__} (scikit-learn {sklearn.__version__}, numpy {numpy.__version__}, "
        f"pandas {pandas.__version__}, uvicorn {uvicorn.__version__}, fastapi "
        f"{fastapi.__version__}, {S.uvicorn_extras()})"
    )


def main() -> None:
    args = C.worker_args()
    tmp = Path(args.tmp).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    w = args.workload
    if w == "setup":
        result = w_setup(args.n, tmp)
        result["versions"] = _versions()
    elif w.startswith("serve_w"):
        result = w_serve(args.n, tmp, int(w.removeprefix("serve_w")))
    else:
        raise SystemExit(f"unknown workload {w!r}")
    result.update(workload=w, tool="mlflow", n=args.n)
    C.emit(result)


if __name__ == "__main__":
    main()

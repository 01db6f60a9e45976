"""Plinth half of the serving benchmark (a worker; run with the project's python).

    .venv/bin/python benchmarks/_plinth_serving.py --workload serve_w1 --n 500 --tmp /tmp/x

Reads ``benchmarks/.work/serving/plan.json`` (written by ``serving.py``: the pickled model,
request bodies, expected answers, the Parquet input and the Plinth home). Workloads:
``setup`` registers the model; ``serve_w1`` / ``serve_w2`` measure ``plinth serve`` with one
or two worker processes; ``floor`` reads the Parquet and predicts with the bare model;
``score`` runs ``plinth score`` on the same Parquet as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import serving as S

NOTES: list[str] = []


def _env() -> dict[str, str]:
    """Point this process and its children at the benchmark's Plinth home."""
    for name in ("PLINTH_URI", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI"):
        os.environ.pop(name, None)
    os.environ["PLINTH_HOME"] = S.plan()["plinth_home"]
    return {"PLINTH_HOME": os.environ["PLINTH_HOME"]}


def w_setup(n: int, tmp: Path) -> dict:
    _env()
    import plinth

    p = S.plan()
    model = S.load_model(p["model_pickle"])
    X, _ = S.make_data(5, S.SEED)
    version = plinth.register_model(model, S.MODEL_NAME, input_example=X)
    plinth.set_alias(S.MODEL_NAME, S.ALIAS, version.version)
    return {"figures": {"version": version.version}}


def w_serve(n: int, tmp: Path, workers: int) -> dict:
    env = _env()

    def command(port: int) -> list[str]:
        cmd = [sys.executable, "-m", "plinth", "serve", S.URI, "--port", str(port)]
        return cmd + (["--workers", str(workers)] if workers > 1 else [])

    return S.measure_server(command, env, tmp, "/ready", "/predict")


def w_floor(n: int, tmp: Path) -> dict:
    """The physical limit: read the Parquet into a DataFrame and predict, nothing else."""
    t0 = time.perf_counter()
    import pyarrow.parquet as pq

    p = S.plan()
    model = S.load_model(p["model_pickle"])
    t1 = time.perf_counter()
    frame = pq.read_table(p["score_input"]).to_pandas()
    t2 = time.perf_counter()
    predictions = model.predict(frame)
    t3 = time.perf_counter()
    assert len(predictions) == n == len(frame), (len(predictions), n)
    return {
        "figures": {
            "floor_s": t3 - t1,
            "read_s": t2 - t1,
            "predict_s": t3 - t2,
            "process_s": t3 - t0,
        }
    }


def w_score(n: int, tmp: Path, threads: int) -> dict:
    env = _env()
    p = S.plan()
    out = tmp / f"scores-{threads}"
    cmd = [sys.executable, "-m", "plinth", "score", S.URI, "--input", p["score_input"]]
    cmd += ["--output", str(out), "--json", "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    score_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"plinth score failed ({proc.returncode}): {proc.stderr[-1500:]}")
    answer = json.loads(proc.stdout)
    checks = _check_scores(out, p, n)
    checks["status DELIVERED"] = answer.get("status") == "DELIVERED"
    skipped = [c["name"] for c in answer.get("checks", []) if c.get("skipped")]
    ran = [c["name"] for c in answer.get("checks", []) if not c.get("skipped")]
    NOTES.append(
        f"plinth score checks run: {', '.join(ran) or 'none'}; skipped: "
        f"{', '.join(skipped) or 'none'} (no training data linked to the version)"
    )
    figures = {"score_s": score_s}
    return {"figures": figures, "checks": checks, "verified": all(checks.values())}


def _check_scores(out: Path, p: dict, n: int) -> dict[str, bool]:
    """All rows written once; the first 10,000 scores equal the model's own predictions."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    table = DeltaTable(str(out)).to_pyarrow_table(columns=["row", "score"])
    table = table.sort_by("row")
    sample = pq.read_table(p["score_input"]).slice(0, 10_000).to_pandas()
    expected = S.load_model(p["model_pickle"]).predict(sample)
    got = table["score"].slice(0, len(sample)).to_numpy()
    return {
        "rows written": table.num_rows == n,
        "rows unique": pc.count_distinct(table["row"]).as_py() == n,
        "scores = model.predict (first 10,000)": bool(np.array_equal(got, expected)),
    }


def _versions() -> str:
    import fastapi
    import numpy
    import pandas
    import pyarrow
    import sklearn
    import uvicorn

    import plinth

    return (
        f"Plinth {plinth.__version__}, scikit-learn {sklearn.__version__}, numpy "
        f"{numpy.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
        f"uvicorn {uvicorn.__version__}, fastapi {fastapi.__version__}, {S.uvicorn_extras()}"
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
    elif w == "floor":
        result = w_floor(args.n, tmp)
    elif w in ("score", "score_t1"):  # one thread per CPU (the default), or one
        result = w_score(args.n, tmp, 1 if w == "score_t1" else 0)
    else:
        raise SystemExit(f"unknown workload {w!r}")
    result.update(workload=w, tool="plinth", n=args.n, notes=NOTES)
    C.emit(result)


if __name__ == "__main__":
    main()

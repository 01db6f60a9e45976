"""CBPE benchmark: Plinth's label-free performance estimation against NannyML's, same data.

    .venv/bin/python benchmarks/cbpe.py              # both chunkings, 5 repeats (~1 minute)
    .venv/bin/python benchmarks/cbpe.py --quick      # one chunking, 2 repeats
    .venv/bin/python benchmarks/cbpe.py --no-nannyml # Plinth only

The data (``make_data``, seed 14): 100,000 reference rows with labels and 100,000 analysis
rows, written once to ``benchmarks/.work/cbpe/{reference,analysis}.parquet`` with columns
``y_score`` (the model's score), ``y_pred`` (``y_score >= 0.5``) and ``y_true``. The true
probability of class 1 is ``sigmoid(2x - 0.4)``; the model is overconfident (its score is
``sigmoid(2.5 (2x - 0.4))``), so both tools calibrate. Reference ``x ~ N(0, 1)``; analysis
``x ~ N(0.3, 0.6)``: a covariate shift towards the decision boundary, which lowers the
realised accuracy, so there is something to estimate.

Each side runs in a fresh process (reading the Parquet files is not timed): Plinth in this
venv (``--worker``), NannyML 0.13.1 in ``benchmarks/.venvs/nannyml`` (``_nannyml_cbpe.py``).
Timed, ``--repeats`` times (median shown): the fit on the reference (NannyML's includes its
own estimate on the reference chunks), and the estimate of the analysis rows without their
labels, for ``roc_auc``, ``f1`` and ``accuracy``. Chunkings: one chunk of 100,000 rows and
ten of 10,000 (NannyML ``chunk_size``; Plinth one ``estimate`` call per chunk). Both use
NannyML's rule for whether to calibrate (Plinth ``calibration="auto"``) and isotonic
calibration. Plinth is asked for a 99.73% interval, the width of NannyML's +-3 sampling
errors. The realised metrics of the analysis rows (with their labels) are shown beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

NANNYML_VENV = C.VENVS_DIR / "nannyml"
NANNYML_REQUIREMENTS = (
    ("nannyml==0.13.1", "statsmodels", "pyarrow"),
    ("nannyml>=0.13,<0.14", "statsmodels", "pyarrow"),
)
NANNYML_WORKER = C.BENCH_DIR / "_nannyml_cbpe.py"
DATA_DIR = C.WORK_DIR / "cbpe"
SEED = 14
ROWS = 100_000
METRICS = ("auc", "f1", "accuracy")
CHUNKINGS = {"1 x 100,000": 100_000, "10 x 10,000": 10_000}
THREE_SIGMA = 0.9973  # NannyML's band is the estimate +- 3 sampling errors
HEADERS = ["workload", "Plinth", "NannyML", "speed-up", "unit", "target", "note"]


def make_data(rows: int = ROWS, seed: int = SEED) -> dict[str, Any]:
    """Reference and analysis frames as dicts of numpy arrays (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def frame(loc: float, scale: float) -> dict[str, Any]:
        logit = 2 * rng.normal(loc, scale, size=rows) - 0.4
        y_true = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
        y_score = 1 / (1 + np.exp(-2.5 * logit))
        return {"y_score": y_score, "y_pred": (y_score >= 0.5).astype("int64"), "y_true": y_true}

    return {"reference": frame(0.0, 1.0), "analysis": frame(0.3, 0.6)}


def write_data(folder: Path = DATA_DIR) -> Path:
    """Write the Parquet files once (a marker names the seed and size they were made with)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = folder / "made-with.txt"
    want = f"seed={SEED} rows={ROWS}"
    if marker.exists() and marker.read_text() == want:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, cols in make_data().items():
        pq.write_table(pa.table(cols), folder / f"{name}.parquet")
    marker.write_text(want)
    return folder


# --------------------------------------------------------------------------- Plinth's worker


def plinth_worker(data: Path, chunk_size: int, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    import numpy as np
    import pyarrow.parquet as pq

    from plinth.stats.performance import CBPE

    import_s = time.perf_counter() - t0
    ref = pq.read_table(data / "reference.parquet")
    scores = pq.read_table(data / "analysis.parquet", columns=["y_score"])
    ref_s = ref["y_score"].to_numpy()
    ref_y = ref["y_true"].to_numpy()
    ana_s = scores["y_score"].to_numpy()
    fit_times, est_times = [], []
    chunks: list[dict[str, Any]] = []
    cbpe = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        cbpe = CBPE.fit(ref_s, ref_y, calibration="auto")
        t1 = time.perf_counter()
        chunks = [
            cbpe.estimate(ana_s[i : i + chunk_size], metrics=METRICS, confidence=THREE_SIGMA)
            for i in range(0, len(ana_s), chunk_size)
        ]
        t2 = time.perf_counter()
        fit_times.append(t1 - t0)
        est_times.append(t2 - t1)
    assert cbpe is not None
    z = 3.0
    return {
        "tool": "plinth",
        "import_s": import_s,
        "fit_s": statistics.median(fit_times),
        "estimate_s": statistics.median(est_times),
        "fit_first_s": fit_times[0],
        "estimate_first_s": est_times[0],
        "calibrated": cbpe.calibrated,
        "calibration_points": len(cbpe.points_x),
        "numpy": np.__version__,
        "chunks": [
            {
                k: {
                    "value": m.value,
                    "lower": m.lower,
                    "upper": m.upper,
                    # unclipped half-width over 3 (the bounds are clipped to [0, 1])
                    "sampling_error": (m.upper - m.lower) / (2 * z)  # type: ignore[operator]
                    if 0 < m.lower < m.upper < 1  # type: ignore[operator]
                    else None,
                }
                for k, m in chunk.items()
            }
            for chunk in chunks
        ],
    }


# --------------------------------------------------------------------------- the runner


def realised(data: Path, chunk_size: int) -> list[dict[str, float]]:
    import pyarrow.parquet as pq

    from plinth.stats.performance import classification_metrics

    t = pq.read_table(data / "analysis.parquet")
    y, s = t["y_true"].to_numpy(), t["y_score"].to_numpy()
    return [
        {
            k: m.value
            for k, m in classification_metrics(
                y[i : i + chunk_size], s[i : i + chunk_size], metrics=METRICS
            ).items()
        }
        for i in range(0, len(y), chunk_size)
    ]


def _nannyml_python(opts: argparse.Namespace) -> Path | None:
    if opts.no_nannyml:
        return None
    try:
        return C.ensure_venv(NANNYML_VENV, NANNYML_REQUIREMENTS, check_import="nannyml")
    except Exception as exc:  # the table still shows Plinth
        C.log(f"NannyML venv unavailable: {C.key_error_line(str(exc))}")
        return None


def _run(python: Path | str, script: Path, args: list[str], errors: list[str], tool: str):
    C.log(f"{tool}: {' '.join(args)}")
    try:
        return C.run_worker(python, script, args, timeout=900)
    except C.WorkerError as exc:
        errors.append(f"{tool}: {C.key_error_line(str(exc))}")
        C.log(f"{tool} FAILED: {exc}")
        return None


def _agreement(
    label: str, p: dict | None, n: dict | None, real: list[dict[str, float]]
) -> list[str]:
    """Lines comparing the two tools' estimates with the realised metrics."""
    if not p:
        return []
    lines = [f"estimates, {label} (estimate [band]; NannyML's band = +-3 sampling errors):"]
    show = range(len(real)) if len(real) == 1 else [0, len(real) - 1]
    for i in show:
        for k in METRICS:
            pm = p["chunks"][i][k]
            cell = (
                f"  chunk {i} {k:8} Plinth {pm['value']:.4f} [{pm['lower']:.4f}, {pm['upper']:.4f}]"
            )
            if n:
                nm = n["chunks"][i][k]
                cell += f"  NannyML {nm['value']:.4f} [{nm['lower']:.4f}, {nm['upper']:.4f}]"
            lines.append(cell + f"  realised {real[i][k]:.4f}")
    for k in METRICS:
        errs_p = [abs(p["chunks"][i][k]["value"] - real[i][k]) for i in range(len(real))]
        line = f"  {k:8} max |Plinth - realised| {max(errs_p):.4f}"
        if n:
            diffs = [
                abs(p["chunks"][i][k]["value"] - n["chunks"][i][k]["value"])
                for i in range(len(real))
            ]
            errs_n = [abs(n["chunks"][i][k]["value"] - real[i][k]) for i in range(len(real))]
            line += f", |NannyML - realised| {max(errs_n):.4f}, |Plinth - NannyML| {max(diffs):.5f}"
            inside = [
                sum(c[k]["lower"] <= real[i][k] <= c[k]["upper"] for i, c in enumerate(r["chunks"]))
                for r in (p, n)
            ]
            line += f"; realised inside the band: Plinth {inside[0]}/{len(real)}, NannyML "
            line += f"{inside[1]}/{len(real)}"
            se_n = [n["chunks"][i][k]["sampling_error"] for i in range(len(real))]
            se_p = [p["chunks"][i][k]["sampling_error"] or float("nan") for i in range(len(real))]
            line += f"; sampling error Plinth {se_p[0]:.4f} vs NannyML {se_n[0]:.4f} (chunk 0)"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "nannyml")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--chunk-size", type=int, default=None, help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        o = ap.parse_args(argv)
        C.emit(plinth_worker(Path(o.data), o.chunk_size, o.repeats))
        return 0
    opts = C.parse_runner_options(ap, argv, "cbpe")
    repeats = opts.repeats or (2 if opts.quick else 5)
    chunkings = dict(list(CHUNKINGS.items())[:1]) if opts.quick else CHUNKINGS
    started = time.perf_counter()
    data = write_data()
    nanny = _nannyml_python(opts)
    errors: list[str] = []
    rows: list[Row] = []
    footer: list[str] = []
    for label, size in chunkings.items():
        args = ["--data", str(data), "--chunk-size", str(size), "--repeats", str(repeats)]
        if opts.wait_quiet:
            C.wait_system_quiet(opts.wait_quiet)
        p = _run(sys.executable, Path(__file__), ["--worker", *args], errors, "plinth")
        n = _run(nanny, NANNYML_WORKER, args, errors, "nannyml") if nanny else None

        def fig(res: dict | None, key: str) -> float | None:
            return None if not res else float(res[key])

        def total(res: dict | None) -> float | None:
            return None if not res else float(res["fit_s"]) + float(res["estimate_s"])

        target = f">= 1{C.TIMES} NannyML"
        rows += [
            Row(f"fit, {label}", fig(p, "fit_s"), fig(n, "fit_s"), "s", False, "", fmt="{:,.3f}"),
            Row(
                f"estimate, {label}",
                fig(p, "estimate_s"),
                fig(n, "estimate_s"),
                "s",
                False,
                "",
                fmt="{:,.3f}",
            ),
            Row(
                f"fit + estimate, {label}",
                total(p),
                total(n),
                "s",
                False,
                target,
                fmt="{:,.3f}",
                note=f"median of {repeats}",
            ),
        ]
        footer += _agreement(label, p, n, realised(data, size))
        if p and n:
            footer.append(
                f"  calibrated: Plinth {p['calibrated']}, NannyML {n['calibrated']}; first run "
                f"fit+estimate Plinth {p['fit_first_s'] + p['estimate_first_s']:.3f} s, NannyML "
                f"{n['fit_first_s'] + n['estimate_first_s']:.3f} s; import Plinth "
                f"{p['import_s']:.2f} s, NannyML {n['import_s']:.2f} s (not in the times)"
            )
    info = C.machine_info()
    footer.append(
        f"data: {ROWS:,} reference + {ROWS:,} analysis rows, seed {SEED}, in {data}; "
        f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}, load average "
        f"{C.load_average():.1f} at the end (other work on the machine skews the times)"
    )
    return C.finish_report(
        rows, "CBPE: Plinth vs NannyML", footer, opts, errors, started, headers=HEADERS
    )


if __name__ == "__main__":
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    sys.exit(main())

"""NannyML half of the CBPE benchmark (a worker; run with the NannyML venv's python).

    benchmarks/.venvs/nannyml/bin/python benchmarks/_nannyml_cbpe.py \
        --data benchmarks/.work/cbpe --chunk-size 100000 --repeats 5

Reads the reference and analysis Parquet files written by ``cbpe.py`` (not timed), then
times ``nannyml.CBPE(problem_type="classification_binary", metrics=["roc_auc", "f1",
"accuracy"], chunk_size=...)``: its construction and ``fit(reference)`` together, and
``estimate(analysis)`` (analysis without labels), ``--repeats`` times each on fresh copies
of the frames. Prints one JSON object on its last stdout line: the median and first
timings, whether NannyML chose to calibrate, and per chunk and metric the estimate, its
sampling error and NannyML's confidence band (estimate +- 3 sampling errors, clipped to
[0, 1]).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no analytics leave this machine
warnings.simplefilter("ignore")
METRICS = {"roc_auc": "auc", "f1": "f1", "accuracy": "accuracy"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--chunk-size", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    opts = ap.parse_args()

    t0 = time.perf_counter()
    import nannyml
    import pandas as pd

    import_s = time.perf_counter() - t0
    reference = pd.read_parquet(os.path.join(opts.data, "reference.parquet"))
    analysis = pd.read_parquet(os.path.join(opts.data, "analysis.parquet")).drop(columns=["y_true"])

    fit_times, estimate_times = [], []
    result = estimator = None
    for _ in range(opts.repeats):
        ref, ana = reference.copy(), analysis.copy()
        t0 = time.perf_counter()
        estimator = nannyml.CBPE(
            problem_type="classification_binary",
            y_pred_proba="y_score",
            y_pred="y_pred",
            y_true="y_true",
            metrics=list(METRICS),
            chunk_size=opts.chunk_size,
        )
        estimator.fit(ref)
        t1 = time.perf_counter()
        result = estimator.estimate(ana)
        t2 = time.perf_counter()
        fit_times.append(t1 - t0)
        estimate_times.append(t2 - t1)

    assert result is not None and estimator is not None
    df = result.filter(period="analysis").to_df()
    chunks = []
    for i in range(len(df)):
        row = {}
        for nml_name, name in METRICS.items():
            row[name] = {
                "value": float(df[(nml_name, "value")].iloc[i]),
                "sampling_error": float(df[(nml_name, "sampling_error")].iloc[i]),
                "lower": float(df[(nml_name, "lower_confidence_boundary")].iloc[i]),
                "upper": float(df[(nml_name, "upper_confidence_boundary")].iloc[i]),
            }
        chunks.append(row)
    print(
        json.dumps(
            {
                "tool": "nannyml",
                "version": nannyml.__version__,
                "import_s": import_s,
                "fit_s": statistics.median(fit_times),
                "estimate_s": statistics.median(estimate_times),
                "fit_first_s": fit_times[0],
                "estimate_first_s": estimate_times[0],
                "calibrated": bool(estimator.needs_calibration),
                "chunks": chunks,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

"""A/B statistics over 10,000,000 units in two arms: every read-out of the results page.

Times plinth.abtests' statistics on per-unit arrays already in memory (loading them from
the exposure and event store is measured elsewhere), with scipy's Welch test on the same
arrays as the reference. Run: ``.venv/bin/python benchmarks/abtests_stats.py [--units N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from plinth.abtests.bayes import beta_binomial, normal_approximation
from plinth.abtests.checks import adjust_p_values, sample_ratio_mismatch
from plinth.abtests.cuped import compare_cuped
from plinth.abtests.sequential import mixing_variance_for_horizon, sequential_test
from plinth.abtests.stats import (
    compare,
    summarize_mean,
    summarize_proportion,
    summarize_ratio,
)


def _timed(label: str, call: Callable[[], object], rows: list[tuple[str, float]]) -> None:
    start = time.perf_counter()
    call()
    rows.append((label, time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10_000_000, help="units over both arms")
    units = parser.parse_args().units // 2
    rng = np.random.default_rng(0)
    arms = {}
    for arm, lift in (("control", 1.0), ("b", 1.01)):
        covariate = rng.gamma(2.0, 10.0, units)
        sessions = rng.poisson(3.0, units) + 1.0
        arms[arm] = {
            "converted": (rng.random(units) < 0.1 * lift).astype(np.int8),
            "revenue": covariate * 0.7 * lift + rng.exponential(5.0, units),
            "covariate": covariate,
            "clicks": rng.binomial(sessions.astype(np.int64), 0.2 * lift).astype(np.float64),
            "sessions": sessions,
        }
    c, b = arms["control"], arms["b"]
    rows: list[tuple[str, float]] = []
    start = time.perf_counter()
    _timed(
        "proportion",
        lambda: compare(summarize_proportion(c["converted"]), summarize_proportion(b["converted"])),
        rows,
    )
    _timed(
        "mean (Welch)",
        lambda: compare(summarize_mean(c["revenue"]), summarize_mean(b["revenue"])),
        rows,
    )
    _timed(
        "ratio (delta method)",
        lambda: compare(
            summarize_ratio(c["clicks"], c["sessions"]), summarize_ratio(b["clicks"], b["sessions"])
        ),
        rows,
    )
    _timed(
        "CUPED mean",
        lambda: compare_cuped(
            {k: v["revenue"] for k, v in arms.items()},
            {k: v["covariate"] for k, v in arms.items()},
            "control",
        ),
        rows,
    )
    _timed(
        "SRM",
        lambda: sample_ratio_mismatch({"control": units, "b": units}, {"control": 1, "b": 1}),
        rows,
    )
    summaries = [summarize_mean(v["revenue"]) for v in (c, b)]
    tau2 = mixing_variance_for_horizon(summaries[0].variance * 2, alpha=0.05)
    _timed(
        "sequential (one look)",
        lambda: sequential_test([summaries[0]], [summaries[1]], mixing_variance=tau2),
        rows,
    )
    _timed(
        "Holm + BH",
        lambda: [
            adjust_p_values({"a": 0.01, "b": 0.2}, method=m) for m in ("holm", "benjamini-hochberg")
        ],
        rows,
    )
    counts = [(int(v["converted"].sum()), units) for v in (c, b)]
    _timed("Beta-Binomial (400k draws)", lambda: beta_binomial(counts[0], counts[1]), rows)
    _timed("normal approximation", lambda: normal_approximation(*summaries), rows)
    total = time.perf_counter() - start
    _timed(
        "scipy Welch (reference)",
        lambda: stats.ttest_ind(b["revenue"], c["revenue"], equal_var=False),
        rows,
    )
    print(f"{units * 2:,} units in 2 arms")
    for label, seconds in rows:
        print(f"  {label:<28} {seconds * 1000:8.1f} ms")
    print(f"  {'all of plinth above':<28} {total * 1000:8.1f} ms")


if __name__ == "__main__":
    main()

"""Authentication benchmark: what tokens and grant checks cost the tracking server and the
model service, authentication OFF and ON side by side, same workloads, one run.

    .venv/bin/python benchmarks/auth.py            # full (~3 minutes idle, ~14 busy)
    .venv/bin/python benchmarks/auth.py --quick    # smoke run (about 1 minute)

Issue 11's bar: with authentication on, the tracking and serving benchmarks keep at least
90% of their throughput. ON means: the server started with ``PLINTH_AUTH=true`` (the model
service with ``--auth``), and the client a non-admin editor's API token (user ``bench``,
written to the fresh home's store before the server starts), so every request's token is
looked up in the store and every operation's grant check runs. OFF: the same server and
store without ``PLINTH_AUTH`` (calls run as the local admin; no checks).

Each workload runs in a worker process (``_plinth_auth.py``) on a fresh home:

- tracking: ``python -m plinth server`` on loopback; through the remote client
  (``plinth.connect(url, token=...)``) (a) runs of create_run, log_params, set_tags,
  end_run, get_run (calls/s), (b) buffered ``run.log_metric`` points/s, (c) ``search_runs``
  calls/s over 200 runs; everything counted back afterwards.
- serving: ``python -m plinth serve models:/bench@live`` (defaults: micro-batching and the
  prediction log on), h2load with 1-row requests at 1 and 32 connections, every request
  with ``Authorization: Bearer <token>`` (both modes send the same bytes).
- checks: the token check and a grant check timed alone, in-process (best of 5 rounds).

OFF and ON alternate (the full run repeats each twice, OFF ON ON OFF, and takes the
median), so a drift in the machine's load hits both. Besides wall-clock rates, the server's
own CPU time per call is reported (from /proc): on a shared machine it moves less than
throughput does. The table is printed and written, as plain text, to
``benchmarks/.work/last-auth.txt``.
"""

from __future__ import annotations

import platform
import shutil
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

import serving as S

WORKER = C.BENCH_DIR / "_plinth_auth.py"
HEADERS = ["workload", "auth OFF", "auth ON", "ON/OFF", "unit", "target", "note"]
KEEP = 0.90  # issue 11: no more than 10% of the throughput lost


@dataclass(frozen=True)
class Sizes:
    runs: int  # (a) runs of five calls each
    points: int  # (b) log_metric points
    searches: int  # (c) search_runs calls
    requests: int  # serving: requests at 1 connection
    requests_c32: int  # at 32: several seconds, as token decisions are kept 1 s
    warmup: int
    reps: int  # OFF/ON pairs
    checks: int  # in-process calls a round


FULL = Sizes(runs=300, points=100_000, searches=200, requests=3_000, requests_c32=10_000,
             warmup=300, reps=2, checks=500)  # fmt: skip
QUICK = Sizes(runs=50, points=10_000, searches=30, requests=500, requests_c32=2_000,
              warmup=100, reps=1, checks=200)  # fmt: skip
TIMEOUTS = {"setup": 300}
MODES = ("off", "on")


class AuthRow(Row):
    """A row OFF against ON: ``mlflow`` holds OFF, ``plinth`` ON; the ratio is ON/OFF."""

    def cells(self) -> list[str]:
        def f(v: float | None) -> str:
            return "—" if v is None else self.fmt.format(v)

        off, on = self.mlflow, self.plinth
        ratio = "—" if not off or on is None else f"{on / off:.1%}"
        return [self.workload, f(off), f(on), ratio, self.unit, self.target, self.note]

    def kept(self) -> float | None:
        off, on = self.mlflow, self.plinth
        return None if not off or on is None else on / off


class Runs:
    """The results of the repetitions of one workload, OFF and ON."""

    def __init__(self) -> None:
        self.by_mode: dict[str, list[dict]] = {m: [] for m in MODES}

    def add(self, mode: str, res: dict | None) -> None:
        if res:
            self.by_mode[mode].append(res)

    def value(self, mode: str, key: str) -> float | None:
        xs = [v for r in self.by_mode[mode] if (v := C.fig(r, key)) is not None]
        return statistics.median(xs) if xs else None

    def spread(self, key: str, fmt: str = "{:,.0f}") -> str:
        """Each repetition's figure, when there were several."""
        parts = []
        for mode in MODES:
            xs = [C.fig(r, key) for r in self.by_mode[mode]]
            if len(xs) > 1:
                parts.append(f"{mode.upper()} " + "/".join(fmt.format(x or 0) for x in xs))
        return "reps: " + ", ".join(parts) if parts else ""


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "serving")
    ap.add_argument("--no-tracking", action="store_true", help="skip the tracking server")
    ap.add_argument(
        "--models",
        default=None,
        help="served models, comma-separated: logistic, forest (default: both; --quick: logistic)",
    )
    opts = C.parse_runner_options(ap, argv, "auth")
    s = QUICK if opts.quick else FULL
    models = (opts.models or ("logistic" if opts.quick else "logistic,forest")).split(",")
    started = time.perf_counter()
    notes: list[str] = []
    serve = not opts.no_serving
    if serve and shutil.which(S.LOADGEN) is None:
        C.log(S.LOADGEN_HINT)
        notes.append(f"model service not measured: {S.LOADGEN_HINT}")
        serve = False

    b = C.Bench("auth", {"plinth": WORKER}, TIMEOUTS, None, opts.keep)
    b.wait_quiet = opts.wait_quiet
    tracking, served = Runs(), {m: Runs() for m in models}

    def order(rep: int) -> tuple[str, ...]:
        return MODES if rep % 2 == 0 else MODES[::-1]

    checks = b.run("plinth", "checks", s.checks)
    if serve:
        for m in models:
            b.run("plinth", f"setup_{m}", 0)
    for rep in range(s.reps):
        for mode in order(rep) if not opts.no_tracking else ():
            res = b.run(
                "plinth",
                f"tracking_{mode}_r{rep}",
                s.runs,
                points=str(s.points),
                searches=str(s.searches),
            )
            tracking.add(mode, res)
        for m in models if serve else ():
            for mode in order(rep):
                res = b.run(
                    "plinth",
                    f"serve_{mode}_{m}_r{rep}",
                    s.requests,
                    warmup=str(s.warmup),
                    n32=str(s.requests_c32),
                )
                served[m].add(mode, res)

    rows: list[AuthRow] = []
    if not opts.no_tracking:
        rows += _tracking_rows(tracking, s)
    for m in models if serve else ():
        rows += _serving_rows(m, served[m], s)
    rows += _check_rows(checks)

    misses = [
        f"{r.workload}: {k:.1%}"
        for r in rows
        if r.target.startswith("≥") and (k := r.kept())
        if k < KEEP
    ]
    machine = C.machine_info()
    import plinth

    footer = [
        f"versions: Python {platform.python_version()}, Plinth {plinth.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, "
        f"{S.uvicorn_extras().replace('with ', 'uvicorn with ')}, "
        f"{S.LOADGEN} {_loadgen_version()}",
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "ON: PLINTH_AUTH=true / plinth serve --auth, the client a non-admin editor's API token "
        "(role editor, owner of the experiments it creates, viewer of the served model by a "
        "grant); OFF: the same without authentication (the local admin, no checks).",
        f"tracking: python -m plinth server on 127.0.0.1, a fresh SQLite home each; (a) "
        f"{s.runs} runs x 5 calls, (b) {s.points:,} buffered log_metric points in one run, "
        f"(c) {s.searches} search_runs (metrics.m0 > 0.5, order by m0 DESC, 50 rows) over "
        "200 runs with 10 params and 2 metrics; all counted back.",
        f"serving: plinth serve models:/bench@live at its defaults, 1 worker; {S.LOADGEN} --h1 "
        f"-c 1 -n {s.requests:,} and -c 32 -n {s.requests_c32:,}, each after a warm-up of {s.warmup}, 1-row dataframe_split "
        "bodies with the Authorization header in both modes.",
        "model: made private to its reader (the grant to everyone revoked, the editor "
        "granted viewer), so the check finds a grant to the user.",
        f"ON/OFF: the median of {s.reps} repetition(s) each, OFF and ON alternating; "
        f"server CPU = user + system time of the server's process tree over the timed part.",
        C.busy_line(b.busy),
        *notes,
    ]
    skip = ("tracking:",) if opts.no_tracking else ()
    skip += ("serving:", "model:") if not serve else ()
    footer = [line for line in footer if not line.startswith(skip)]
    if misses:
        footer.append("below the bar (ON keeps < 90%): " + "; ".join(misses))
    elif rows:
        footer.append("every throughput row keeps at least 90% with authentication on")
    mode_name = "quick" if opts.quick else "full"
    title = f"Plinth — the cost of authentication ({mode_name}; ON/OFF = share kept with it on)"
    return C.finish_report(rows, title, footer, opts, b.errors, started, headers=HEADERS)


def _tracking_rows(t: Runs, s: Sizes) -> list[AuthRow]:
    def row(label: str, key: str, unit: str, better: bool, target: str, fmt: str) -> AuthRow:
        return AuthRow(
            label,
            t.value("on", key),
            t.value("off", key),
            unit,
            higher_is_better=better,
            target=target,
            fmt=fmt,
            note=t.spread(key, fmt),
        )

    return [
        row("tracking (a): create/params/tags/end/get_run", "calls_per_s", "calls/s", True,
            "≥ 90%", "{:,.0f}"),
        row("tracking (a): server CPU per call", "server_cpu_ms_per_call", "ms", False,
            "report", "{:,.2f}"),
        row("tracking (b): buffered log_metric", "points_per_s", "points/s", True, "≥ 90%",
            "{:,.0f}"),
        row("tracking (b): server CPU per point", "server_cpu_us_per_point", "µs", False,
            "report", "{:,.2f}"),
        row("tracking (c): search_runs over 200 runs", "searches_per_s", "calls/s", True,
            "≥ 90%", "{:,.1f}"),
        row("tracking (c): server CPU per search", "server_cpu_ms_per_search", "ms", False,
            "report", "{:,.2f}"),
    ]  # fmt: skip


def _serving_rows(model: str, r: Runs, s: Sizes) -> list[AuthRow]:
    out = []
    for c in (1, 32):
        what = f"serve {model}, 1 row, c={c}"

        def row(
            label: str, key: str, unit: str, better: bool, target: str, fmt: str, what: str = what
        ) -> AuthRow:
            return AuthRow(
                f"{what}: {label}",
                r.value("on", key),
                r.value("off", key),
                unit,
                higher_is_better=better,
                target=target,
                fmt=fmt,
                note=r.spread(key, fmt),
            )

        out += [
            row("throughput", f"per_s_c{c}", "req/s", True, "≥ 90%", "{:,.0f}"),
            row("p50 latency", f"p50_ms_c{c}", "ms", False, "report", "{:,.2f}"),
            row("p99 latency", f"p99_ms_c{c}", "ms", False, "report", "{:,.2f}"),
            row("server CPU per request", f"server_cpu_ms_c{c}", "ms", False, "report",
                "{:,.2f}"),
            row("token decisions (token_used events)", f"token_used_events_c{c}", "events",
                False, "report", "{:,.0f}"),
        ]  # fmt: skip
    return out


def _check_rows(res: dict | None) -> list[AuthRow]:
    if not res:
        return []
    us = "{:,.0f}"

    def one(label: str, key: str, note: str) -> AuthRow:
        return AuthRow(label, C.fig(res, key), None, "µs", False, "report", note, us)

    def pair(label: str, key: str) -> AuthRow:
        return AuthRow(
            label,
            C.fig(res, f"{key}_editor_us"),
            C.fig(res, f"{key}_admin_us"),
            "µs",
            False,
            "report",
            "in-process; OFF = as the local admin (no checks), ON = as the editor",
            us,
        )

    return [
        one("token check (Authenticator.authenticate)", "authenticate_us",
            "in-process, best of 5; the token SELECT (join users) + the groups SELECT"),
        one("grant check: run id -> experiment", "resolve_run_us", "by_run: one SELECT"),
        one("grant check: the caller's level", "grant_level_us",
            "Access.level: SELECT max(level) from grants"),
        pair("set_tags, in-process", "set_tags"),
        pair("get_run, in-process", "get_run"),
    ]  # fmt: skip


def _loadgen_version() -> str:
    return S._loadgen_version()


if __name__ == "__main__":
    sys.exit(main())

"""Small helpers shared by the benchmark scripts.

- ``ensure_venv``: create a virtualenv with given requirements once (idempotent).
- ``run_worker``: run a worker script with a given python, return the JSON dict it printed
  on its last stdout line.
- ``print_table``: print the comparison table (rich when available, plain text otherwise).

Only the standard library is needed here; ``rich`` is used when importable.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
WORK_DIR = BENCH_DIR / ".work"


def log(msg: str) -> None:
    """Progress line on stderr, so stdout stays clean for the table."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- venvs


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(
    venv: Path,
    requirement_sets: Sequence[Sequence[str]],
    check_import: str | None = None,
) -> Path:
    """Make sure ``venv`` exists with one of ``requirement_sets`` installed.

    The sets are tried in order (e.g. a pinned version first, then a looser range for when a
    registry mirror lags behind). A marker file records what was installed, so later calls
    return at once. Returns the venv's python.
    """
    py = venv_python(venv)
    marker = venv / ".bench-installed"
    if marker.exists() and py.exists():
        if check_import is None or _can_import(py, check_import):
            return py
        log(f"{venv}: marker present but `import {check_import}` fails; reinstalling")
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        log(f"creating virtualenv {venv}")
        subprocess.run(
            [sys.executable if _is_base_python() else "python3", "-m", "venv", str(venv)],
            check=True,
        )
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
    errors = []
    for reqs in requirement_sets:
        log(f"pip install {' '.join(reqs)} into {venv} (first run only; takes a minute)")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and (check_import is None or _can_import(py, check_import)):
            log(f"installed in {time.perf_counter() - t0:.0f} s")
            marker.write_text(json.dumps({"requirements": list(reqs), "at": time.time()}))
            return py
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        errors.append(f"{reqs}: {tail}")
        log(f"pip failed for {reqs}; trying the next requirement set\n{tail}")
    raise RuntimeError(f"could not set up {venv}:\n" + "\n".join(errors))


def _is_base_python() -> bool:
    # ``python -m venv`` from inside another venv works, but makes the new venv's base the
    # same interpreter anyway; prefer the real base when we are in a venv.
    return sys.prefix == sys.base_prefix


def _can_import(py: Path, module: str) -> bool:
    return subprocess.run([str(py), "-c", f"import {module}"], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- workers


class WorkerError(RuntimeError):
    pass


def run_worker(
    python: str | Path,
    script: str | Path,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    cwd: str | Path | None = None,
) -> dict:
    """Run ``python script *args`` and return the JSON dict printed on its last stdout line.

    The worker's stderr is passed through to ours when it fails (last lines) so the key line
    of a traceback is visible.
    """
    full_env = dict(os.environ)
    # Do not leak the harness' venv into the reference tool's interpreter; Plinth's worker
    # keeps PYTHONPATH, so that a worktree's src/ is what is measured.
    full_env.pop("VIRTUAL_ENV", None)
    if Path(python) != Path(sys.executable):
        full_env.pop("PYTHONPATH", None)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    cmd = [str(python), str(script), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # The worker leads its own process group: stop it and whatever it started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise WorkerError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    returncode = proc.returncode
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if returncode != 0 or not lines:
        raise WorkerError(
            f"worker failed (exit {returncode}): {' '.join(cmd)}\n" + _tail(stderr, 12)
        )
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise WorkerError(
            f"worker's last line is not JSON: {lines[-1][:200]!r}\n" + _tail(stderr, 8)
        ) from exc
    if not isinstance(result, dict):
        raise WorkerError(f"worker printed {type(result).__name__}, not a JSON object")
    return result


def key_error_line(text: str) -> str:
    """The line of a traceback that says what went wrong (last 'SomethingError: ...')."""
    for line in reversed(text.strip().splitlines()):
        s = line.strip()
        if s and not s.startswith(("File ", "^", "~")) and ("Error" in s or "Exception" in s):
            return s
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def _tail(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def emit(result: dict) -> None:
    """Worker side: print the result dict as the last stdout line."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- measuring


def p95(xs: Sequence[float]) -> float:
    """The 95th percentile (of 20 or more values, to mean anything)."""
    return statistics.quantiles(xs, n=20)[-1]


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Total RSS of ``pid`` and all its descendants (shared pages counted in each)."""
    return sum(_status_kb(p, "VmRSS:") for p in tree_pids(pid)) * 1024


def tree_pss_bytes(pid: int) -> int:
    """Total PSS of the process tree: shared pages split between their sharers."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total * 1024


def _status_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_cpu_ticks(pid: int) -> int:
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def wait_tree_idle(
    pid: int, max_wait: float = 30.0, busy_below: float = 0.1, window: float = 0.5
) -> float:
    """Wait until the process tree uses less than ``busy_below`` of one CPU over ``window``
    (e.g. a server's worker processes have finished booting); return seconds waited."""
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        a = _tree_cpu_ticks(pid)
        time.sleep(window)
        if (_tree_cpu_ticks(pid) - a) / hz / window < busy_below:
            break
    return time.perf_counter() - t0


def system_busy(window: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``window`` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals[:8]), idle

    t1, i1 = sample()
    time.sleep(window)
    t2, i2 = sample()
    return 1.0 - (i2 - i1) / max(1, t2 - t1)


def wait_system_quiet(max_wait: float, busy_below: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until other processes leave the CPUs mostly idle;
    return the busy fraction seen last."""
    t0 = time.perf_counter()
    busy = system_busy(0.5)
    while busy >= busy_below and time.perf_counter() - t0 < max_wait:
        busy = system_busy(1.0)
    return busy


def peak_rss_bytes() -> int:
    """Peak RSS (VmHWM) of the current process."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Poll ``url`` until it answers 2xx; return seconds waited. Loopback only."""
    import urllib.error
    import urllib.request

    assert url.startswith(("http://127.0.0.1", "http://localhost")), url
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before ready")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if 200 <= resp.status < 300:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def start_server(cmd: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "wb")  # noqa: SIM115 - closed by stop_server
    proc = subprocess.Popen(
        list(cmd),
        env={**os.environ, **env},
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._bench_log = fh  # type: ignore[attr-defined]
    # So that the harness can stop the server if the worker itself dies or times out.
    log_path.with_suffix(".pgid").write_text(str(proc.pid))
    return proc


def kill_leftover_servers(folder: Path) -> None:
    """Kill the process group of any server that a worker started under ``folder`` and left
    running (a worker killed on timeout cannot stop it itself)."""
    for pgid_file in folder.glob("**/*.pgid") if folder.exists() else []:
        try:
            pgid = int(pgid_file.read_text())
            os.killpg(pgid, 0)  # still there?
        except (ValueError, OSError):
            continue
        log(f"stopping a server left running (process group {pgid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def stop_server(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop the server's whole process group (it was started in its own session)."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=grace)
    # Workers (gunicorn/uvicorn) may linger for a moment after the parent has gone.
    if pgid is not None:
        deadline = time.time() + grace
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    fh = getattr(proc, "_bench_log", None)
    if fh is not None:
        fh.close()


# --------------------------------------------------------------------------- reporting


@dataclass
class Row:
    workload: str
    plinth: float | None
    mlflow: float | None
    unit: str
    higher_is_better: bool = True
    target: str = ""
    note: str = ""
    fmt: str = "{:,.0f}"
    extra: dict = field(default_factory=dict)

    def ratio(self) -> float | None:
        if self.plinth is None or self.mlflow is None or self.plinth == 0 or self.mlflow == 0:
            return None
        return self.plinth / self.mlflow if self.higher_is_better else self.mlflow / self.plinth

    def cells(self) -> list[str]:
        def f(v: float | None) -> str:
            return "—" if v is None else self.fmt.format(v)

        r = self.ratio()
        ratio = "—" if r is None else (f"{r:,.1f}{TIMES}" if r < 100 else f"{r:,.0f}{TIMES}")
        return [
            self.workload,
            f(self.plinth),
            f(self.mlflow),
            ratio,
            self.unit,
            self.target,
            self.note,
        ]


TIMES = "\u00d7"  # the multiplication sign
HEADERS = ["workload", "Plinth", "MLflow", "speed-up", "unit", "target", "note"]


def print_table(
    rows: Sequence[Row],
    title: str,
    footer: Sequence[str] = (),
    plain: bool = False,
    file=None,
    headers: Sequence[str] = HEADERS,
) -> None:
    """Rows = workloads; columns = Plinth, MLflow, speed-up (Plinth over MLflow), units
    (``headers`` names them otherwise, for a runner whose rows compare something else)."""
    file = file or sys.stdout
    data = [r.cells() for r in rows]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        table = Table(title=title, title_justify="left")
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if 1 <= i <= 3 else "left", overflow="fold")
        for cells in data:
            table.add_row(*cells)
        console = Console(
            file=file, width=max(140, shutil.get_terminal_size().columns), highlight=False
        )
        console.print(table)
        for line in footer:
            console.print(line, markup=False)
        return
    widths = [
        max(len(h), *(len(c[i]) for c in data)) if data else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if 1 <= i <= 3 else c.ljust(widths[i]))
        return " | ".join(out).rstrip()

    print(title, file=file)
    print(line(headers), file=file)
    print("-+-".join("-" * w for w in widths), file=file)
    for cells in data:
        print(line(cells), file=file)
    for fl in footer:
        print(fl, file=file)


# --------------------------------------------------------------------------- machine info


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
    }


def load_average() -> float:
    """The 1-minute load average (other processes on this machine skew the figures)."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def cache_key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- worker CLI


def worker_args(argv: Sequence[str] | None = None):
    """The CLI shared by the workers: ``--workload NAME --n N --tmp DIR [--runs R]``."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--n", type=int, default=0, help="size (points, runs, ...); 0 = default")
    p.add_argument("--tmp", required=True, help="a fresh scratch folder for this workload")
    p.add_argument(
        "--cache",
        default=str(WORK_DIR / "cache"),
        help="where populated stores are kept between runs (search workload)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="bound for open-ended loops (server workload)",
    )
    return p.parse_args(argv)


def bound_loop_n(n: int, per_item_s: float, max_s: float) -> int:
    """Shrink ``n`` so that ``n * per_item_s`` stays under ``max_s``."""
    if per_item_s <= 0:
        return n
    return max(1, min(n, int(max_s / per_item_s)))


class Bench:
    """Runs one workload in a worker process per tool (Plinth in this python, MLflow in its
    venv), caches the results, and collects errors and how busy the CPUs were."""

    def __init__(
        self,
        part: str,
        workers: dict[str, Path],
        timeouts: dict[str, int],
        mlflow_py: Path | None,
        keep: bool,
    ) -> None:
        self.part = part
        self.workers = workers
        self.timeouts = timeouts
        self.mlflow_py = mlflow_py
        self.keep = keep
        self.results: dict[tuple[str, str, int], dict] = {}
        self.errors: list[str] = []
        self.busy: list[float] = []
        self.wait_quiet = 0.0
        self.tmp_root = WORK_DIR / "tmp"

    def python_for(self, tool: str) -> Path | None:
        """The interpreter of ``tool``'s worker; None: the tool is not run."""
        return self.mlflow_py if tool == "mlflow" else Path(sys.executable)

    def worker_arguments(self, workload: str, n: int, tmp: Path) -> list[str]:
        return ["--workload", workload, "--n", str(n), "--tmp", str(tmp)]

    def run(self, tool: str, workload: str, n: int, **extra: str) -> dict | None:
        key = (tool, workload, n)
        if key in self.results:
            return self.results[key]
        python = self.python_for(tool)
        if python is None:
            return None
        script = self.workers[tool]
        tmp = self.tmp_root / f"{self.part}-{tool}-{workload}-{n}"
        shutil.rmtree(tmp, ignore_errors=True)
        args = self.worker_arguments(workload, n, tmp)
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        busy = wait_system_quiet(self.wait_quiet) if self.wait_quiet > 0 else system_busy(0.5)
        self.busy.append(busy)
        log(f"{tool:6} {workload} n={n:,} ... (CPUs {busy:.0%} busy before it)")
        t0 = time.perf_counter()
        try:
            res = run_worker(python, script, args, timeout=self.timeouts.get(workload, 600))
        except WorkerError as exc:
            line = key_error_line(str(exc))
            log(f"{tool:6} {workload} FAILED: {line}")
            self.errors.append(f"{tool} {workload} (n={n:,}): {line}")
            self.results[key] = {}
            return None
        finally:
            kill_leftover_servers(tmp)
            if not self.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        res["wall_s"] = time.perf_counter() - t0
        if res.get("verified") is False:
            self.errors.append(
                f"{tool} {workload} (n={n:,}): NOT verified: {res.get('checks', res)}"
            )
        figs = ", ".join(f"{k}={v:,.4g}" for k, v in res.get("figures", {}).items())
        log(f"{tool:6} {workload} done in {res['wall_s']:.1f} s: {figs}")
        self.results[key] = res
        return res


def fig(res: dict | None, name: str) -> float | None:
    if not res:
        return None
    v = res.get("figures", {}).get(name)
    return float(v) if v is not None else None


# --------------------------------------------------------------------------- a runner's main


def runner_options(description: str, reference: str) -> argparse.ArgumentParser:
    """The options every runner takes: --quick, --plain, --no-REFERENCE, --keep,
    --wait-quiet and --out; a runner adds its own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--plain", action="store_true", help="plain-text table (no rich)")
    ap.add_argument(f"--no-{reference}", action="store_true", help="Plinth only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each workload, wait up to SECONDS for the CPUs to be mostly "
        "idle (other processes on a shared machine skew the figures)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="where the plain-text report is also written (default: "
        "benchmarks/.work/last-PART.txt, last-PART-quick.txt with --quick)",
    )
    return ap


def parse_runner_options(
    ap: argparse.ArgumentParser, argv: Sequence[str] | None, part: str
) -> argparse.Namespace:
    opts = ap.parse_args(argv)
    if opts.out is None:
        opts.out = str(WORK_DIR / f"last-{part}{'-quick' if opts.quick else ''}.txt")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    return opts


def busy_line(busy: list[float]) -> str:
    """The footer line on how busy the machine was before the workloads."""
    worst = max(busy, default=0)
    return (
        f"CPU use by other processes just before each workload: median "
        f"{median(busy or [0]):.0%}, max {worst:.0%}"
        + (" (the machine was shared with other work: figures are noisy)" if worst > 0.25 else "")
    )


def finish_report(
    rows: list[Row],
    title: str,
    footer: list[str],
    opts: argparse.Namespace,
    errors: list[str],
    started: float,
    headers: Sequence[str] = HEADERS,
) -> int:
    """Print the table (and write it as plain text to ``opts.out``) with the problems and
    the total time under the footer; 1 if there were problems."""
    if errors:
        footer.append("problems:")
        footer.extend(f"  - {e}" for e in errors)
    footer.append(f"total benchmark time: {time.perf_counter() - started:,.0f} s")
    print_table(rows, title, footer, plain=opts.plain, headers=headers)
    buf = io.StringIO()
    print_table(rows, title, footer, plain=True, file=buf, headers=headers)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(buf.getvalue())
    log(f"report written to {opts.out}")
    return 1 if errors else 0

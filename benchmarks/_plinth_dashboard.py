"""Plinth half of the dashboard benchmark (a worker; run with the project's python).

    .venv/bin/python benchmarks/_plinth_dashboard.py --workload runs_page --n 10000 --tmp /tmp/x

``runs_page``: ``plinth server`` over the tracking benchmark's populated store (``n`` runs,
10 params, 5 metrics; cached), the runs page of the experiment fetched again and again:
its server time (wall time of the request over loopback) at p50/p95, page 1, a later page,
and with a filter and a metric sort. ``chart``: one run with an ``n``-point metric; the
chart's JSON at p50/p95, and in headless Chromium the time from navigation to the chart
drawn on the run page.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import _plinth_tracking as T

DEFAULT_N = {"runs_page": 10_000, "chart": 200_000}
REPS = 40


def _server(home: Path, tmp: Path):
    port = C.free_port()
    cmd = [sys.executable, "-m", "plinth", "server", "--host", "127.0.0.1", "--port", str(port)]
    env = {"PLINTH_HOME": str(home), "PLINTH_URI": ""}
    proc = C.start_server(cmd, env, tmp / "server.log")
    C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def _timed(client, url: str, reps: int = REPS) -> list[float]:
    client.get(url).raise_for_status()  # warm: plans, templates, page cache
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        answer.raise_for_status()
    return times


def w_runs_page(n: int, tmp: Path, args) -> dict:
    import httpx

    tmp.mkdir(parents=True, exist_ok=True)
    cache, meta, _ = T.search_store(Path(args.cache), n)
    home = tmp / "home"
    home.mkdir()
    for p in cache.iterdir():
        if p.name.startswith("plinth.db"):
            shutil.copy2(p, home / p.name)
    proc, url = _server(home, tmp)
    figures: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            pages = {
                "first": "/ui/experiments/bench",
                "later": "/ui/experiments/bench?page=100",
                "filtered": "/ui/experiments/bench?filter="
                + quote("metrics.m0 > 0.5")
                + "&sort=metrics.m0&order=desc",
            }
            every: list[float] = []
            for name, page in pages.items():
                times = _timed(client, page)
                every += times
                figures[f"{name}_p50_ms"] = statistics.median(times)
                figures[f"{name}_p95_ms"] = C.p95(times)
            figures["p50_ms"] = statistics.median(every)
            figures["p95_ms"] = C.p95(every)
            body = client.get(pages["first"]).text
            rows = body.count('href="/ui/runs/')
    finally:
        C.stop_server(proc)
    return {"figures": figures, "verified": rows >= 50, "runs": meta["runs"], "rows": rows}


def w_chart(n: int, tmp: Path, args) -> dict:
    import httpx

    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"
    T._home(home)
    import plinth

    with plinth.start_run(experiment="bench", name="long", capture_environment=False) as run:
        value = 1.0
        for step in range(n):
            value = value * 0.99999 + (step % 97) * 1e-6
            run.log_metric("loss", value, step=step)
    plinth.set_default_client(None)
    proc, url = _server(home, tmp)
    figures: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            spec = f"/ui/runs/{run.id}/metrics.json?key=loss"
            times = _timed(client, spec, reps=20)
            figures["json_p50_ms"] = statistics.median(times)
            figures["json_p95_ms"] = C.p95(times)
            drawn = client.get(spec).json()
            points = sum(len(s["x"]) for s in drawn["series"])
        figures.update(_in_browser(f"{url}/ui/runs/{run.id}"))
    finally:
        C.stop_server(proc)
    return {"figures": figures, "verified": 0 < points <= 5000, "points_drawn": points}


def _in_browser(page_url: str, reps: int = 5) -> dict[str, float]:
    """Navigation start to the chart drawn, in headless Chromium (a fresh page each time)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for i in range(reps + 1):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(page_url)
            page.wait_for_selector("[data-chart][data-drawn=true]", timeout=30_000)
            on_screen = page.evaluate(
                "new Promise(r => requestAnimationFrame(() => r(performance.now())))"
            )
            if i:  # the first one warms the browser's caches
                times.append(on_screen)
            page.close()
        browser.close()
    return {"browser_p50_ms": statistics.median(times), "browser_max_ms": max(times)}


def main() -> None:
    args = C.worker_args()
    os.environ.setdefault("PLINTH_HOME", str(Path(args.tmp) / "home"))
    n = args.n or DEFAULT_N[args.workload]
    result = globals()[f"w_{args.workload}"](n, Path(args.tmp), args)
    result["version"] = T._version()
    C.emit(result)


if __name__ == "__main__":
    main()

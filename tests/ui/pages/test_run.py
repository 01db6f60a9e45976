"""The run page: header and live status, params, metric charts (downsampled, zoomed), tags,
artifacts (listed, previewed, downloaded, never served as a page), lineage; bad input."""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from plinth.client import Client
from plinth.tracking.types import (
    DatasetInput,
    Environment,
    Lineage,
    MetricBatch,
    Run,
    RunStatus,
)
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
ENVIRONMENT = Environment(
    "e" * 64, "3.11.9", "Linux-6.1-x86_64", {"numpy": "2.1.0", "plinth": "0.1"}
)


def on(target: Dashboard | Client) -> Any:
    """The services to seed through: a dashboard's own, or a client's (browser tests)."""
    return target.app.state.dashboard if isinstance(target, Dashboard) else target


def tracking(target: Dashboard | Client) -> Any:
    return on(target).tracking


def log_metric(dashboard: Dashboard | Client, run_id: str, key: str, values: list[float]) -> None:
    n = len(values)
    batch = MetricBatch(
        [key] * n, values, list(range(n)), [1_700_000_000_000 + i for i in range(n)], [None] * n
    )
    tracking(dashboard).log_metric_batch(run_id, batch)


def write(dashboard: Dashboard | Client, run_id: str, path: str, data: bytes) -> None:
    with tracking(dashboard).open_artifact_writer(run_id, path) as out:
        out.write(data)


def seeded_run(dashboard: Dashboard | Client, end: bool = True) -> Run:
    service = tracking(dashboard)
    lineage = Lineage(
        "abc123def456", True, "https://git.example/team/churn.git", "/src/train.py", "gpu-7", None
    )
    run = service.create_run(
        "churn",
        "baseline",
        description="first try",
        tags={"team": "growth"},
        lineage=lineage,
        environment=ENVIRONMENT,
    )
    service.log_params(run.id, {"lr": 0.1, "layers": [64, 32]}, group="model")
    service.log_params(run.id, {"source": "warehouse"}, group="data")
    service.set_seed(run.id, 42)
    service.log_input(run.id, DatasetInput("customers", "s3://lake/customers", "d" * 64, "7", 1200))
    log_metric(dashboard, run.id, "loss", [1.0 / (i + 1) for i in range(50)])
    log_metric(dashboard, run.id, "accuracy", [0.5, 0.7, 0.6, 0.8])
    write(dashboard, run.id, "notes.txt", b"<script>alert(1)</script> fine")
    write(dashboard, run.id, "plots/curve.png", PNG)
    write(dashboard, run.id, "report.html", b"<html><body onload=alert(1)>hi</body></html>")
    write(
        dashboard,
        run.id,
        "logo.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    )
    if end:
        service.end_run(run.id, RunStatus.FINISHED)
    found: Run = service.get_run(run.id)
    return found


def text_of(page: Any) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)))


def test_the_run_page_shows_its_header_params_metrics_and_tags(any_dashboard: Dashboard) -> None:
    run = seeded_run(any_dashboard)
    page = any_dashboard.http.get(f"/ui/runs/{run.id}")
    assert page.status_code == 200, page.text
    shown = text_of(page)
    assert re.search(r"Experiments \W churn \W Run #1", shown)
    assert 'href="/ui/experiments/churn"' in page.text
    assert "<h1>baseline</h1>" in page.text and "first try" in shown
    assert "FINISHED" in shown and "hx-trigger" not in page.text  # finished: no polling
    # params by group, values as logged
    assert re.search(r"data .*source warehouse", shown) and re.search(
        r"model .*layers \[64, 32\] lr 0.1", shown
    )
    assert "team growth" in shown
    # a chart per metric, with its text alternative and its numbers
    for key in ("accuracy", "loss"):
        url = f"/ui/runs/{run.id}/metrics.json?key={key}"
        assert f'data-chart="{url}" data-zoom="{url}"' in page.text
    assert 'aria-label="Line chart of loss by step, 50 points: last 0.02 at step 49' in page.text
    assert "Points Last Min Max Best 4 0.8 (step 3) 0.5 0.8 0.8 (step 3, max)" in shown
    assert "All 50 points." in shown


def test_a_running_run_refreshes_its_status_until_it_ends(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard, end=False)
    page = dashboard.http.get(f"/ui/runs/{run.id}")
    assert f'hx-get="/ui/runs/{run.id}/status" hx-trigger="every 5s"' in page.text
    assert "still running" in text_of(page)
    tracking(dashboard).end_run(run.id, RunStatus.FAILED)
    fragment = dashboard.http.get(f"/ui/runs/{run.id}/status", headers={"hx-request": "true"})
    assert fragment.status_code == 200 and "<h1>" not in fragment.text
    assert "FAILED" in fragment.text and "hx-trigger" not in fragment.text  # polling stops
    whole = dashboard.http.get(f"/ui/runs/{run.id}/status")
    assert "<h1>baseline</h1>" in whole.text  # the same URL opened as a page


def test_a_chart_is_the_metric_downsampled_with_its_best_points(dashboard: Dashboard) -> None:
    run = tracking(dashboard).create_run("churn")
    values = [float((i * 7919) % 1000) for i in range(5000)]
    log_metric(dashboard, run.id, "val/auc", values)
    page = dashboard.http.get(f"/ui/runs/{run.id}")
    assert "2,000 of 5,000 points shown; zoom for detail" in text_of(page)
    spec = dashboard.http.get(f"/ui/runs/{run.id}/metrics.json?key=val%2Fauc").json()
    line, best = spec["series"]
    assert (line["label"], line["style"], best["label"], best["style"]) == (
        "val/auc",
        "line",
        "best",
        "points",
    )
    assert 1000 <= len(line["x"]) <= 2002 and line["x"] == sorted(line["x"])
    assert min(line["y"]) == min(values) and max(line["y"]) == max(values)  # extremes kept
    assert best["y"] == sorted(best["y"]) and best["y"][-1] == max(values)  # "max" goal: rising
    assert spec["x_label"] == "step"
    zoomed = dashboard.http.get(
        f"/ui/runs/{run.id}/metrics.json?key=val%2Fauc&start=100.4&end=399.6"
    ).json()
    assert zoomed["series"][0]["x"] == list(range(100, 401))  # every point of the range
    assert zoomed["series"][0]["y"] == values[100:401]
    empty = dashboard.http.get(f"/ui/runs/{run.id}/metrics.json?key=val%2Fauc&start=9000&end=9999")
    assert empty.status_code == 200
    line, best = empty.json()["series"]  # the shape of the whole chart, to redraw it
    assert (line["x"], best["x"], best["style"]) == ([], [], "points")


def test_unknown_runs_and_metrics_are_not_found(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    for path in ("", "/artifacts", "/lineage", "/status", "/artifacts/preview?path=notes.txt"):
        page = dashboard.http.get(f"/ui/runs/nope{path}")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"], path
        assert "run &#39;nope&#39; does not exist" in page.text
    for query in ("key=nope", "key=nope&start=1&end=5"):
        chart = dashboard.http.get(
            f"/ui/runs/{run.id}/metrics.json?{query}", headers={"accept": "application/json"}
        )
        assert chart.status_code == 404, query
        assert chart.json()["message"] == f"run {run.id} has no metric 'nope'"
    zoom = dashboard.http.get(
        "/ui/runs/nope/metrics.json?key=loss&start=1&end=5", headers={"accept": "application/json"}
    )
    assert zoom.status_code == 404
    as_page = dashboard.http.get(f"/ui/runs/{run.id}/metrics.json?key=nope")
    assert as_page.status_code == 404 and "text/html" in as_page.headers["content-type"]
    bad = dashboard.http.get(
        f"/ui/runs/{run.id}/metrics.json?key=loss&start=soon",
        headers={"accept": "application/json"},
    )
    assert bad.status_code == 422 and "start" in bad.json()["message"]
    backwards = dashboard.http.get(f"/ui/runs/{run.id}/metrics.json?key=loss&start=9&end=2")
    assert backwards.status_code == 422 and "start (9.0) is after end (2.0)" in backwards.text


def test_artifacts_are_listed_by_folder(any_dashboard: Dashboard) -> None:
    run = seeded_run(any_dashboard)
    page = any_dashboard.http.get(f"/ui/runs/{run.id}/artifacts")
    assert page.status_code == 200
    names = re.findall(r'<td><a href="[^"]*">([^<]+)</a></td>', page.text)
    assert names == ["plots/", "logo.svg", "notes.txt", "report.html"]  # folders first
    assert f'href="/ui/runs/{run.id}/artifacts?path=plots"' in page.text
    assert f'href="/ui/runs/{run.id}/artifacts/download?path=notes.txt" download' in page.text
    folder = any_dashboard.http.get(f"/ui/runs/{run.id}/artifacts?path=plots")
    assert "Artifacts in plots" in folder.text
    assert (
        f'href="/ui/runs/{run.id}/artifacts/preview?path=plots%2Fcurve.png">curve.png'
        in folder.text
    )
    empty = any_dashboard.http.get(f"/ui/runs/{run.id}/artifacts?path=nothing/here")
    assert empty.status_code == 200 and "No artifacts in nothing/here." in empty.text


def test_text_previews_are_escaped_and_cut(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    page = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=notes.txt")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; fine</pre>" in page.text
    assert "<script>alert" not in page.text
    html_file = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=report.html")
    assert "&lt;body onload=alert(1)&gt;" in html_file.text  # an HTML artifact is shown as text
    svg = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=logo.svg")
    assert "<img" not in svg.text and "&lt;svg" in svg.text
    write(dashboard, run.id, "big.log", b"x" * 70_000 + b"TAIL")
    big = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=big.log")
    assert "The first 64.0 KB are shown" in big.text and "TAIL" not in big.text
    assert "x" * 65_536 + "</pre>" in big.text
    write(dashboard, run.id, "weights.bin", b"\x00\x01\x02")
    binary = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=weights.bin")
    assert "weights.bin is a binary file" in binary.text and "<pre" not in binary.text


def test_images_are_shown_with_their_type_and_only_raster_images(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    page = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/preview?path=plots/curve.png")
    src = f"/ui/runs/{run.id}/artifacts/image?path=plots%2Fcurve.png"
    assert f'<img src="{src}" alt="Image artifact plots/curve.png">' in page.text
    image = dashboard.http.get(src)
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    for path in ("logo.svg", "report.html", "notes.txt"):
        refused = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/image?path={path}")
        assert refused.status_code == 422, path
        assert "is not shown as an image" in refused.text
        assert refused.headers["content-type"].startswith("text/html")  # our error page


def test_downloads_are_attachments_never_pages(any_dashboard: Dashboard) -> None:
    run = seeded_run(any_dashboard)
    for path, body in (
        ("report.html", b"<html><body onload=alert(1)>hi</body></html>"),
        ("plots/curve.png", PNG),
    ):
        answer = any_dashboard.http.get(f"/ui/runs/{run.id}/artifacts/download?path={path}")
        assert answer.status_code == 200 and answer.content == body
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["x-content-type-options"] == "nosniff"
        name = path.rsplit("/", 1)[-1]
        assert (
            answer.headers["content-disposition"]
            == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
        )
    write(any_dashboard, run.id, 'odd "näme".txt', b"x")
    odd = any_dashboard.http.get(
        f"/ui/runs/{run.id}/artifacts/download", params={"path": 'odd "näme".txt'}
    )
    assert odd.headers["content-disposition"] == (
        "attachment; filename=\"odd _n_me_.txt\"; filename*=UTF-8''odd%20%22n%C3%A4me%22.txt"
    )


def test_paths_outside_the_run_are_refused(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    write(dashboard, run.id, "plots/inner.txt", b"inside")
    routes = ("artifacts", "artifacts/preview", "artifacts/image", "artifacts/download")
    for path in (
        "../../etc/passwd",
        "/etc/passwd",
        "plots/../../x.png",
        "a\\b.png",
        "../notes.txt",
    ):
        for route in routes:
            answer = dashboard.http.get(f"/ui/runs/{run.id}/{route}", params={"path": path})
            assert answer.status_code == 422, (route, path)
            assert "text/html" in answer.headers["content-type"]
            assert "is not allowed" in html.unescape(answer.text)
            assert "root:" not in answer.text


def test_missing_artifacts_are_not_found(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    for route in ("preview", "image", "download"):
        answer = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/{route}?path=gone.png")
        assert answer.status_code == 404, route
        assert "no artifact file" in html.unescape(answer.text)
    folder = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/download?path=plots")
    assert folder.status_code == 404
    for route in ("preview", "image", "download"):
        no_path = dashboard.http.get(f"/ui/runs/{run.id}/artifacts/{route}")
        assert no_path.status_code == 422 and "it is empty" in no_path.text


def register(
    dashboard: Dashboard | Client, run_id: str, folder: str, model_name: str = "churn-model"
) -> None:
    """A model version made from the run: its package under the run's artifacts."""
    from sklearn.linear_model import LogisticRegression

    from plinth.registry.package import save_package

    features = [[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 0.0]]
    model = LogisticRegression().fit(features, [0, 1, 0, 1])
    with tempfile.TemporaryDirectory() as tmp:
        save_package(model, Path(tmp))
        for file in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            write(
                dashboard, run_id, f"{folder}/{file.relative_to(tmp).as_posix()}", file.read_bytes()
            )
    run = tracking(dashboard).get_run(run_id)
    package = f"{run.experiment_id}/{run_id}/artifacts/{folder}"
    on(dashboard).registry.create_model_version(model_name, package, run_id)


def test_lineage_shows_code_environment_datasets_and_model_versions(
    any_dashboard: Dashboard,
) -> None:
    from tests.features.conftest import define
    from tests.features.test_views import churn_view

    run = seeded_run(any_dashboard, end=False)
    fs = any_dashboard.app.state.dashboard.feature_store
    define(fs)
    churn_view(fs)
    dataset = fs.service.record_training_dataset(
        "churn",
        1,
        "file:///lake/rows",
        "file:///lake/entities",
        4,
        {"customer_stats:v1": 0},
        "event_timestamp",
        "churned",
    )
    tracking(any_dashboard).log_input(
        run.id, DatasetInput("churn_v1", dataset.uri, None, str(dataset.id), 4)
    )
    other = tracking(any_dashboard).create_run("churn")
    register(any_dashboard, run.id, "model")
    register(any_dashboard, run.id, "model-b")
    register(any_dashboard, other.id, "model")
    page = any_dashboard.http.get(f"/ui/runs/{run.id}/lineage")
    assert page.status_code == 200, page.text
    shown = text_of(page)
    assert "Git commit abc123def456 uncommitted changes" in shown
    assert "Git remote https://git.example/team/churn.git" in shown
    assert "Entry point /src/train.py Host gpu-7 Seed 42" in shown
    assert "Python 3.11.9 Platform Linux-6.1-x86_64" in shown and "2 packages" in shown
    assert "numpy 2.1.0" in shown
    assert f"customers s3://lake/customers {'d' * 16} 7 1,200" in shown
    assert f"{dataset.id} churn:v1 4 customer_stats:v1 @ 0 churned" in shown
    links = re.findall(r'href="(/ui/models/[^"]+)">([^<]+)</a>', page.text)
    assert links == [
        ("/ui/models/churn-model/versions/2", "churn-model v2"),
        ("/ui/models/churn-model/versions/1", "churn-model v1"),
    ]
    bare = tracking(any_dashboard).create_run("churn")
    empty = text_of(any_dashboard.http.get(f"/ui/runs/{bare.id}/lineage"))
    assert "No environment recorded." in empty and "No datasets recorded." in empty
    assert "No training datasets of the feature store." in empty
    assert "No model versions registered from this run." in empty


def test_a_run_is_shown_only_to_who_may_read_it(tmp_path: Path) -> None:
    from plinth.auth.types import Kind, Role

    private = Dashboard(tmp_path / "server", auth=True, private_by_default=True)
    with private.http:
        run = seeded_run(private)
        register(private, run.id, "model", "secret-model")
        private.user("mallory", Role.EDITOR)
        private.user("vic", Role.VIEWER)
        private.auth.grant(Kind.EXPERIMENT, "churn", "user", "vic", "viewer")
        private.sign_in("mallory")
        for path in (
            "",
            "/artifacts",
            "/lineage",
            "/artifacts/download?path=notes.txt",
            "/metrics.json?key=loss",
        ):
            hidden = private.http.get(f"/ui/runs/{run.id}{path}")
            assert hidden.status_code == 404, path  # a private run's existence does not leak
            assert "notes" not in hidden.text and "baseline" not in hidden.text
        private.http.cookies.clear()
        private.sign_in("vic")
        page = private.http.get(f"/ui/runs/{run.id}/lineage")
        assert page.status_code == 200 and "<h1>baseline</h1>" in page.text
        assert "secret-model" not in page.text  # the run is vic's to read, the model is not
        assert "No model versions registered from this run." in text_of(page)


def test_a_deleted_run_says_so_on_its_page(dashboard: Dashboard) -> None:
    run = seeded_run(dashboard)
    assert "was deleted" not in dashboard.http.get(f"/ui/runs/{run.id}").text
    tracking(dashboard).delete_run(run.id)
    page = dashboard.http.get(f"/ui/runs/{run.id}")
    assert page.status_code == 200
    assert "This run was deleted on" in text_of(page)
    assert f"plinth runs restore {run.id}" in text_of(page)

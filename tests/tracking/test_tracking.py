"""The tracking contract, run against every backend: SQLite, PostgreSQL and a server over HTTP."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.client import Client
from plinth.tracking.types import DatasetInput, RunStatus
from tests.backends import local_client


class TestExperiments:
    def test_create_get_list(self, client: Client) -> None:
        created = client.create_experiment("churn", "predict churn", {"team": "risk"})
        assert client.get_experiment("churn") == created
        assert client.get_experiment(created.id).name == "churn"
        assert created.tags == {"team": "risk"}
        client.create_experiment("fraud")
        assert [e.name for e in client.list_experiments()] == ["churn", "fraud"]
        assert [e.name for e in client.list_experiments(name_like="fr%")] == ["fraud"]

    def test_a_name_that_reads_as_an_id_is_refused(self, client: Client) -> None:
        # asked for by name or id, such a name would answer for another's experiment
        victim = client.create_experiment("churn")
        for name in (victim.id, victim.id.upper(), "0" * 32):
            with pytest.raises((plinth.InvalidArgument, plinth.AlreadyExists)):
                client.create_experiment(name)
        for name in (victim.id.upper(), "0" * 32):  # a run in a new experiment of that name
            with pytest.raises(plinth.InvalidArgument, match="reads as an experiment id"):
                client.start_run(name, capture_environment=False)
        assert client.get_experiment(victim.id).name == "churn"
        client.create_experiment("a" * 31)  # not an id's length: a name like any other

    def test_duplicate_and_unknown(self, client: Client) -> None:
        client.create_experiment("churn")
        with pytest.raises(plinth.AlreadyExists, match="churn"):
            client.create_experiment("churn")
        with pytest.raises(plinth.NotFound, match="nope"):
            client.get_experiment("nope")

    @pytest.mark.parametrize("name", ["", " ", "x" * 501, "tab\there"])
    def test_bad_names(self, client: Client, name: str) -> None:
        with pytest.raises(plinth.InvalidArgument):
            client.create_experiment(name)

    def test_non_ascii_and_long_names(self, client: Client) -> None:
        name = "Abwanderung-客户流失-" + "é" * 400
        assert client.create_experiment(name).name == name
        with client.start_run(experiment=name, name="ëxpérience 🚀") as run:
            run.log_metric("précision", 0.5)
        got = client.get_run(run.id)
        assert (got.experiment_name, got.name) == (name, "ëxpérience 🚀")
        assert got.metrics["précision"].last == 0.5

    @pytest.mark.parametrize("name", ["team/churn", "a/b/tags", "/lead", "100%/x?y#z"])
    def test_names_with_slashes_and_url_characters(self, client: Client, name: str) -> None:
        created = client.create_experiment(name, tags={"k": "v"})
        assert client.get_experiment(name) == created
        client.tracking.set_experiment_tags(name, {"k": "w"})
        assert client.get_experiment(name).tags == {"k": "w"}
        with client.start_run(experiment=name) as run:
            run.log_metric("loss", 0.5)
        assert client.get_run(run.id).experiment_name == name
        assert [r.id for r in client.search_runs(experiments=[name])] == [run.id]


class TestRuns:
    def test_the_readme_story(self, client: Client, tmp_path: Path) -> None:
        report = tmp_path / "report.html"
        report.write_text("<h1>ok</h1>")
        with client.start_run(experiment="churn", name="model-A") as run:
            run.log_params({"max_depth": 6, "lr": 0.1}, group="hyper")
            for epoch in range(100):
                run.log_metric("val_f1", epoch / 100, step=epoch)
            run.log_artifact(report)
            assert run.id
        got = client.get_run(run.id)
        assert (got.name, got.status, got.number) == ("model-A", RunStatus.FINISHED, 1)
        assert got.params == {"hyper": {"max_depth": 6, "lr": 0.1}}
        summary = got.metrics["val_f1"]
        assert (summary.count, summary.last, summary.last_step) == (100, 0.99, 99)
        assert (summary.min, summary.max, summary.best, summary.best_step) == (0.0, 0.99, 0.99, 99)
        history = client.get_metric_history(run.id, "val_f1")
        assert [p.step for p in history] == list(range(100))
        assert [p.value for p in history] == [e / 100 for e in range(100)]
        assert all(p.timestamp.tzinfo is not None for p in history)
        assert client.read_artifact(run.id, "report.html") == b"<h1>ok</h1>"
        assert got.end_time is not None and got.end_time >= got.start_time

    def test_numbers_and_auto_names(self, client: Client) -> None:
        first = client.start_run(experiment="churn")
        second = client.start_run(experiment="churn", name="run-3")
        third = client.start_run(experiment="churn")
        for run in (first, second, third):
            run.end()
        assert [client.get_run(r.id).number for r in (first, second, third)] == [1, 2, 3]
        assert first.name == "run-1"
        assert third.name.startswith("run-3-")  # "run-3" was taken by hand

    def test_duplicate_run_name(self, client: Client) -> None:
        client.start_run(experiment="churn", name="model-A").end()
        with pytest.raises(plinth.AlreadyExists, match="model-A"):
            client.start_run(experiment="churn", name="model-A")
        client.start_run(experiment="other", name="model-A").end()  # names are per experiment

    def test_exception_marks_failed_and_keeps_points(self, client: Client) -> None:
        with pytest.raises(ZeroDivisionError), client.start_run(experiment="churn") as run:
            for step in range(10):
                run.log_metric("loss", 1.0 / (10 - step), step=step)
            1 / 0  # noqa: B018
        got = client.get_run(run.id)
        assert got.status is RunStatus.FAILED
        assert got.metrics["loss"].count == 10

    def test_keyboard_interrupt_marks_killed(self, client: Client) -> None:
        with pytest.raises(KeyboardInterrupt), client.start_run(experiment="churn") as run:
            run.log_metric("loss", 1.0)
            raise KeyboardInterrupt
        assert client.get_run(run.id).status is RunStatus.KILLED

    def test_end_states(self, client: Client) -> None:
        run = client.start_run(experiment="churn")
        run.end("FAILED")
        assert client.get_run(run.id).status is RunStatus.FAILED
        client.tracking.end_run(run.id, RunStatus.FAILED)  # the same end again is fine
        with pytest.raises(plinth.Conflict, match="already ended as FAILED"):
            client.tracking.end_run(run.id, RunStatus.FINISHED)
        with pytest.raises(plinth.InvalidArgument):
            client.tracking.end_run(run.id, RunStatus.RUNNING)

    def test_unknown_run(self, client: Client) -> None:
        with pytest.raises(plinth.NotFound, match="deadbeef"):
            client.get_run("deadbeef")
        with pytest.raises(plinth.NotFound):
            client.tracking.log_params("deadbeef", {"a": 1})
        with pytest.raises(plinth.NotFound):
            client.tracking.set_tags("deadbeef", {"a": "1"})
        with pytest.raises(plinth.NotFound):
            client.get_metric_history("deadbeef", "loss")

    def test_lineage_and_environment(self, client: Client) -> None:
        with client.start_run(experiment="churn", seed=7) as run:
            run.log_input("customers", "s3://lake/customers.parquet", digest="sha256:ab", rows=1000)
            run.log_input("labels", "file:///data/labels.csv", version="v3", context="training")
        got = client.get_run(run.id)
        assert got.lineage.seed == 7
        assert got.lineage.host
        assert [(i.name, i.uri, i.digest, i.version, i.rows, i.context) for i in got.inputs] == [
            ("customers", "s3://lake/customers.parquet", "sha256:ab", None, 1000, None),
            ("labels", "file:///data/labels.csv", None, "v3", None, "training"),
        ]
        env = client.tracking.get_environment(got.lineage.environment_digest or "")
        assert "pytest" in env.packages and env.python_version.startswith("3.")

    def test_an_input_keeps_what_a_client_sent(self, client: Client) -> None:
        run = client.tracking.create_run("churn")
        schema, profile = '{"mlflow_colspec": [{"type": "long"}]}', '{"num_rows": 4}'
        sent = DatasetInput("d", "{}", "dg", None, 4, None, "eval", "code", schema, profile)
        client.tracking.log_input(run.id, sent)
        (got,) = client.get_run(run.id).inputs
        assert got.logged_at is not None and replace(got, logged_at=None) == sent
        client.tracking.log_input(run.id, DatasetInput("d", "s3://b/d"))  # replaces it all
        (got,) = client.get_run(run.id).inputs
        assert (got.uri, got.context, got.source_type, got.schema, got.profile) == (
            "s3://b/d",
            None,
            None,
            None,
            None,
        )
        for bad in ({"context": ""}, {"source_type": "x" * 501}):
            with pytest.raises(plinth.InvalidArgument, match=next(iter(bad))):
                client.tracking.log_input(run.id, DatasetInput("d", "s3://b/d", **bad))

    def test_seed_helper_records_seed(self, client: Client) -> None:
        import random

        with client.start_run(experiment="churn") as run:
            run.seed(1234)
            first = random.random()
        random.seed(1234)
        assert random.random() == first
        assert client.get_run(run.id).lineage.seed == 1234


class TestParams:
    def test_typed_values_and_groups(self, client: Client) -> None:
        values = {
            "i": 3,
            "f": 0.25,
            "s": "gbm",
            "b": True,
            "j": {"layers": [64, 32]},
            "l": [1, "a"],
        }
        with client.start_run(experiment="churn") as run:
            run.log_params(values, group="model")
            run.log_param("rows", 1000, group="data")
            run.log_param("plain", "x")
        params = client.get_run(run.id).params
        assert params == {"model": values, "data": {"rows": 1000}, "default": {"plain": "x"}}
        assert type(params["model"]["b"]) is bool and type(params["model"]["i"]) is int

    def test_immutable(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            run.log_params({"lr": 0.1}, group="hyper")
            run.log_params({"lr": 0.1}, group="hyper")  # the same value again is fine
            with pytest.raises(plinth.Conflict, match=r"hyper\.lr"):
                run.log_params({"lr": 0.2}, group="hyper")
            run.log_params({"lr": 0.2}, group="other")  # another group is another param
        assert client.get_run(run.id).params["hyper"] == {"lr": 0.1}

    @pytest.mark.parametrize(
        "value",
        [{1, 2}, frozenset({"a"}), b"bytes", object()],
        ids=["set", "frozenset", "bytes", "object"],
    )
    def test_values_json_cannot_hold_are_refused_alike_everywhere(
        self, client: Client, value: object
    ) -> None:
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.InvalidArgument, match=r"param default\.p: .* not a JSON value"):
            run.log_param("p", value)
        with pytest.raises(plinth.InvalidArgument, match="not a JSON value"):
            client.tracking.log_params(run.id, {"p": value})
        run.end()
        assert client.get_run(run.id).params == {}

    def test_not_json(self, client: Client) -> None:
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.InvalidArgument):
            run.log_param("obj", object())  # type: ignore[arg-type]
        run.end()


class TestMetrics:
    def test_auto_steps_goals_and_best(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            for loss in (0.9, 0.5, 0.7, 0.4, 0.6):
                run.log_metric("val_loss", loss)  # minimised: its name says loss
            for acc in (0.5, 0.7, 0.6):
                run.log_metric("acc", acc)
            run.define_metric("custom", "min")
            for value in (3.0, 1.0, 2.0):
                run.log_metric("custom", value)
        history = client.get_metric_history(run.id, "val_loss")
        assert [p.step for p in history] == [0, 1, 2, 3, 4]
        assert [p.is_best for p in history] == [True, True, False, True, False]
        metrics = client.get_run(run.id).metrics
        assert (
            metrics["val_loss"].goal,
            metrics["val_loss"].best,
            metrics["val_loss"].best_step,
        ) == ("min", 0.4, 3)
        assert (metrics["acc"].goal, metrics["acc"].best, metrics["acc"].best_step) == (
            "max",
            0.7,
            1,
        )
        assert (metrics["custom"].best, metrics["custom"].last) == (1.0, 2.0)

    def test_explicit_is_best(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            run.log_metric("f1", 0.9, step=0, is_best=False)
            run.log_metric("f1", 0.3, step=1, is_best=True)
        summary = client.get_run(run.id).metrics["f1"]
        assert (summary.best, summary.best_step, summary.max) == (0.3, 1, 0.9)

    def test_nan_and_infinity_are_stored_faithfully(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            run.log_metric("loss", 1.0)
            run.log_metric("loss", math.nan)
            run.log_metric("loss", math.inf)
            run.log_metric("loss", -math.inf)
        values = [p.value for p in client.get_metric_history(run.id, "loss")]
        assert values[0] == 1.0 and math.isnan(values[1]) and values[2:] == [math.inf, -math.inf]
        summary = client.get_run(run.id).metrics["loss"]
        assert (summary.min, summary.max, summary.count, summary.last) == (
            -math.inf,
            math.inf,
            4,
            -math.inf,
        )
        only_nan = client.start_run(experiment="churn")
        only_nan.log_metric("x", math.nan)
        only_nan.end()
        summary = client.get_run(only_nan.id).metrics["x"]
        assert math.isnan(summary.last) and summary.min is None and summary.best is None

    def test_out_of_order_steps_and_many_flushes(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            run.log_metric("m", 5.0, step=5)
            run.flush()
            run.log_metric("m", 1.0, step=1)
            run.flush()
            run.log_metrics({"m": 7.0, "n": 2.0}, step=7)
        summary = client.get_run(run.id).metrics["m"]
        assert (summary.last, summary.last_step, summary.min, summary.max, summary.count) == (
            7.0,
            7,
            1.0,
            7.0,
            3,
        )
        assert [p.step for p in client.get_metric_history(run.id, "m")] == [1, 5, 7]

    def test_large_series(self, client: Client) -> None:
        with client.start_run(experiment="churn") as run:
            for step in range(20_000):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
        history = client.get_metric_history(run.id, "loss")
        assert len(history) == 20_000 and history[-1].value == 1.0 / 20_000

    def test_bad_metric_name(self, client: Client) -> None:
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.InvalidArgument):
            client.tracking.log_metric_batch(run.id, plinth_batch(["x" * 501], [1.0]))
        with pytest.raises(plinth.InvalidArgument, match="values has 2 entries"):
            client.tracking.log_metric_batch(run.id, plinth_batch(["a"], [1.0, 2.0]))
        run.end()


def plinth_batch(keys: list[str], values: list[float]) -> plinth.tracking.types.MetricBatch:
    from plinth.tracking.types import MetricBatch

    n = len(keys)
    return MetricBatch(keys, values, list(range(n)), [0] * n, [False] * n)


class TestTags:
    def test_mutable_tags(self, client: Client) -> None:
        with client.start_run(experiment="churn", tags={"team": "risk"}) as run:
            run.set_tag("stage", "draft")
            run.set_tags({"stage": "final", "owner": "ana"})
        assert client.get_run(run.id).tags == {"team": "risk", "stage": "final", "owner": "ana"}
        client.tracking.delete_tag(run.id, "owner")
        assert "owner" not in client.get_run(run.id).tags
        with pytest.raises(plinth.NotFound):
            client.tracking.delete_tag(run.id, "owner")

    @pytest.mark.parametrize("value", [3, 0.5, True, None, ["a"]])
    def test_tag_values_are_strings_everywhere(self, client: Client, value: object) -> None:
        with pytest.raises(
            plinth.InvalidArgument, match=r"tag 'k': value .* tag values are strings"
        ):
            client.start_run(experiment="churn", tags={"k": value})  # type: ignore[dict-item]
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.InvalidArgument, match="tag 'k': value"):
            run.set_tag("k", value)  # type: ignore[arg-type]
        with pytest.raises(plinth.InvalidArgument, match="tag 'k': value"):
            client.tracking.set_tags(run.id, {"k": value})  # type: ignore[dict-item]
        with pytest.raises(plinth.InvalidArgument, match="tag 'k': value"):
            client.create_experiment("tagged", tags={"k": value})  # type: ignore[dict-item]
        run.end()
        assert client.get_run(run.id).tags == {}


class TestArtifacts:
    def test_files_folders_and_listing(self, client: Client, tmp_path: Path) -> None:
        folder = tmp_path / "model"
        (folder / "sub").mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
        (folder / "sub" / "meta.json").write_text("{}")
        with client.start_run(experiment="churn") as run:
            run.log_artifacts(folder)
            run.log_dict({"a": 1}, "config/params.json")
        top = {e.path: e.is_dir for e in client.list_artifacts(run.id)}
        assert top == {"model": True, "config": True}
        inner = {e.path: e.size for e in client.list_artifacts(run.id, "model")}
        assert inner == {"model/weights.bin": 2000, "model/sub": None}
        out = client.download_artifact(run.id, "model/sub/meta.json", tmp_path / "out")
        assert out.read_text() == "{}"
        assert b'"a": 1' in client.read_artifact(run.id, "config/params.json")

    @pytest.mark.parametrize("path", ["../escape.txt", "a/../../b", "/etc/passwd", "a\\b"])
    def test_paths_stay_inside_the_run(self, client: Client, tmp_path: Path, path: str) -> None:
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.InvalidArgument):
            run.log_text("x", path)
        with pytest.raises(plinth.InvalidArgument):
            client.read_artifact(run.id, path)
        run.end()
        assert not (tmp_path / "escape.txt").exists()

    def test_missing_artifact(self, client: Client) -> None:
        run = client.start_run(experiment="churn")
        with pytest.raises(plinth.NotFound):
            client.read_artifact(run.id, "nothing.txt")
        run.end()


def test_delete_artifacts_spares_a_registered_versions_files(
    tmp_path: Path, sqlite_uri: str
) -> None:
    from sklearn.linear_model import LogisticRegression

    client = local_client(sqlite_uri, str(tmp_path / "artifacts"))
    tracking = client.tracking
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with client.start_run(experiment="churn") as run:
        run.log_text("a", "notes/a.txt")
        run.log_text("b", "notes/b.txt")
        version = run.log_model(model, "pkg/model", registered_model="churn")
    assert version is not None
    tracking.delete_artifacts(run.id, "notes/a.txt")
    assert [e.path for e in tracking.list_artifacts(run.id, "notes")] == ["notes/b.txt"]
    tracking.delete_artifacts(run.id, "notes")
    assert [e.path for e in tracking.list_artifacts(run.id)] == ["pkg"]
    first = sorted(version.manifest.files)[0]
    for path in ("pkg", "pkg/model", f"pkg/model/{first}"):  # holding, being, inside it
        with pytest.raises(plinth.Conflict, match="models:/churn/1: a registered version"):
            tracking.delete_artifacts(run.id, path)
    assert client.read_artifact(run.id, f"pkg/model/{first}")
    with pytest.raises(plinth.InvalidArgument):
        tracking.delete_artifacts(run.id, "../elsewhere")
    with pytest.raises(plinth.NotFound):
        tracking.delete_artifacts("f" * 32, "notes")
    client.delete_run(run.id)
    with pytest.raises(plinth.Conflict, match="is deleted"):
        tracking.delete_artifacts(run.id, "pkg/other")
    client.close()


class TestSearch:
    @pytest.fixture
    def runs(self, client: Client) -> dict[str, str]:
        ids = {}
        for i, (lr, team, f1) in enumerate(
            [(0.1, "risk", 0.9), (0.1, "growth", 0.85), (0.01, "risk", 0.7), (0.2, "risk", 0.95)]
        ):
            with client.start_run(
                experiment="churn" if i < 3 else "fraud", name=f"r{i}", tags={"team": team}
            ) as run:
                run.log_params({"lr": lr, "model": "gbm" if i % 2 else "rf"}, group="hyper")
                run.log_metric("val_f1", f1 - 0.1, step=0)
                run.log_metric("val_f1", f1, step=1)
            ids[f"r{i}"] = run.id
        client.start_run(experiment="churn", name="r4")  # RUNNING, no metrics
        return ids

    def names(self, page: plinth.tracking.types.Page) -> list[str]:  # type: ignore[type-arg]
        return [r.name for r in page]

    def test_the_issue_filter(self, client: Client, runs: dict[str, str]) -> None:
        found = client.search_runs(
            filter="metrics.val_f1 > 0.8 and params.hyper.lr = 0.1 and tags.team = 'risk' and status = 'FINISHED'"
        )
        assert self.names(found) == ["r0"]

    def test_order_by_metric_param_attribute(self, client: Client, runs: dict[str, str]) -> None:
        assert self.names(client.search_runs(order_by=["metrics.val_f1 DESC"])) == [
            "r3",
            "r0",
            "r1",
            "r2",
            "r4",
        ]
        assert self.names(client.search_runs(order_by=["metrics.val_f1"])) == [
            "r2",
            "r1",
            "r0",
            "r3",
            "r4",
        ]
        by_lr = self.names(client.search_runs(order_by=["params.hyper.lr DESC", "name"]))
        assert by_lr == ["r3", "r0", "r1", "r2", "r4"]
        assert self.names(client.search_runs(order_by=["name DESC"])) == [
            "r4",
            "r3",
            "r2",
            "r1",
            "r0",
        ]
        # Strings sort alphabetically ("gbm" < "rf"), runs without the param last.
        by_model = self.names(client.search_runs(order_by=["params.model", "name"]))
        assert by_model == ["r1", "r3", "r0", "r2", "r4"]
        by_model = self.names(client.search_runs(order_by=["params.hyper.model DESC", "name"]))
        assert by_model == ["r0", "r2", "r1", "r3", "r4"]

    def test_operators(self, client: Client, runs: dict[str, str]) -> None:
        def names(f: str) -> set[str]:
            return {r.name for r in client.search_runs(filter=f)}

        assert names("metrics.val_f1 >= 0.9") == {"r0", "r3"}
        assert names("metrics.val_f1.min < 0.7") == {"r2"}
        assert names("params.lr = 0.1") == {"r0", "r1"}
        assert names("params.hyper.model = 'gbm'") == {"r1", "r3"}
        assert names("params.hyper.model in ('gbm', 'xx')") == {"r1", "r3"}
        assert names("tags.team != 'risk'") == {"r1"}
        assert names("name like 'r%' and not name in ('r0', 'r1')") == {"r2", "r3", "r4"}
        assert names("status = 'RUNNING'") == {"r4"}
        assert names("metrics.val_f1 is null") == {"r4"}
        assert names(
            "tags.team is not null and (metrics.val_f1 < 0.75 or params.hyper.lr > 0.15)"
        ) == {"r2", "r3"}
        assert names("experiment = 'fraud'") == {"r3"}
        assert names("start_time > '2000-01-01'") == {"r0", "r1", "r2", "r3", "r4"}
        assert names("number = 1") == {"r0", "r3"}

    def test_experiments_and_pagination(self, client: Client, runs: dict[str, str]) -> None:
        assert self.names(client.search_runs(experiments=["fraud"])) == ["r3"]
        seen: list[str] = []
        page = client.search_runs(order_by=["name"], max_results=2)
        seen += self.names(page)
        while page.next_page_token:
            page = client.search_runs(
                order_by=["name"], max_results=2, page_token=page.next_page_token
            )
            seen += self.names(page)
        assert seen == ["r0", "r1", "r2", "r3", "r4"]
        with pytest.raises(plinth.InvalidArgument, match="page_token"):
            client.search_runs(page_token="garbage")
        with pytest.raises(plinth.InvalidArgument, match="max_results"):
            client.search_runs(max_results=0)
        with pytest.raises(plinth.NotFound):
            client.search_runs(experiments=["missing"])

    @pytest.mark.parametrize(
        ("bad", "position"),
        [
            ("metrics.val_f1 >", 17),
            ("metrics.val_f1 > 'high'", 18),
            ("colour = 'red'", 1),
            ("status = 'DONE'", 10),
            ("name = 'x' and", 15),
            ("(name = 'x'", 12),
            ("name = 'x'; DROP TABLE runs", 11),
            ("tags.team = 'a' or 1 = 1", 20),
        ],
    )
    def test_bad_filters_name_the_position(
        self, client: Client, runs: dict[str, str], bad: str, position: int
    ) -> None:
        with pytest.raises(plinth.InvalidArgument, match=f"at position {position}:"):
            client.search_runs(filter=bad)
        assert len(client.search_runs()) == 5  # nothing was harmed

    def test_too_many_order_by_terms_is_a_client_error(
        self, client: Client, runs: dict[str, str]
    ) -> None:
        with pytest.raises(plinth.InvalidArgument, match="order_by: 2000 terms"):
            client.search_runs(order_by=["metrics.val_f1 DESC"] * 2000)
        with pytest.raises(plinth.InvalidArgument, match=r"^order_by term 2 \('colour'\)"):
            client.search_runs(order_by=["name", "colour"])

    def test_hostile_strings_are_values(self, client: Client, runs: dict[str, str]) -> None:
        assert len(client.search_runs(filter="name = 'x''; DROP TABLE runs; --'")) == 0
        assert len(client.search_runs()) == 5
        hostile = "x'); DROP TABLE runs; --"
        with client.start_run(experiment="churn", name="evil") as run:
            run.log_metric(hostile, 1.0)
            run.log_param(hostile, 3, group="hyper")
        found = client.search_runs(
            filter=f"metrics.`{hostile}` > 0.5 and params.hyper.`{hostile}` = 3",
            order_by=[f"metrics.`{hostile}` DESC", f"params.`{hostile}`"],
        )
        assert self.names(found) == ["evil"]
        assert len(client.search_runs()) == 6

    def test_compare(self, client: Client, runs: dict[str, str]) -> None:
        cmp = client.compare_runs([runs["r0"], runs["r1"], runs["r2"]])
        assert cmp.run_names == ["r0", "r1", "r2"]
        assert cmp.params["hyper.lr"] == [0.1, 0.1, 0.01]
        assert set(cmp.params_differing) == {"hyper.lr", "hyper.model"}
        assert [s.last if s else None for s in cmp.metrics["val_f1"]] == [0.9, 0.85, 0.7]
        with pytest.raises(plinth.NotFound):
            client.compare_runs([runs["r0"], "missing"])


def test_close_stale_runs(client: Client) -> None:
    run = client.start_run(experiment="churn")
    assert client.close_stale_runs(timeout_seconds=3600) == []
    with pytest.raises(plinth.InvalidArgument):
        client.close_stale_runs(timeout_seconds=0)
    run._buffer.close()  # the process "dies": no more heartbeats
    import time

    deadline = time.monotonic() + 10
    closed: list[str] = []
    while not closed and time.monotonic() < deadline:
        closed = client.close_stale_runs(timeout_seconds=0.05)
    assert closed == [run.id]
    assert client.get_run(run.id).status is RunStatus.KILLED


@pytest.mark.integration
def test_postgres_and_s3_together(postgres_uri: str, s3_bucket: str, tmp_path: Path) -> None:
    """The scaled-out set-up: metadata in PostgreSQL, artifacts in an S3 bucket."""
    from tests.backends import local_client

    client = local_client(postgres_uri, f"{s3_bucket}/artifacts")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 4096)
    with client.start_run(experiment="s3-churn") as run:
        run.log_artifacts(model)
        run.log_metric("auc", 0.9)
    got = client.get_run(run.id)
    assert got.artifact_uri.startswith(f"{s3_bucket}/artifacts/")
    assert [(e.path, e.size) for e in client.list_artifacts(run.id, "model")] == [
        ("model/weights.bin", 4096)
    ]
    assert client.read_artifact(run.id, "model/weights.bin") == b"w" * 4096
    with pytest.raises(plinth.NotFound):
        client.read_artifact(run.id, "model/missing.bin")


def test_fluent_api_logs_to_the_active_run() -> None:
    """MLflow habits work: start a run, then log through module functions."""
    assert plinth.active_run() is None
    with pytest.raises(plinth.InvalidArgument, match="no active run"):
        plinth.log_metric("loss", 1.0)
    outer = plinth.start_run(experiment="fluent")
    plinth.log_param("lr", 0.1)
    with plinth.start_run(experiment="fluent") as inner:
        assert plinth.active_run() is inner
        plinth.log_metric("loss", 0.5)
    assert plinth.active_run() is outer
    plinth.log_metrics({"loss": 0.7, "acc": 0.9}, step=3)
    plinth.set_tag("team", "risk")
    plinth.end_run()
    assert plinth.active_run() is None
    got = plinth.get_run(outer.id)
    assert got.status is RunStatus.FINISHED and got.params == {"default": {"lr": 0.1}}
    assert (got.metrics["loss"].last_step, got.tags) == (3, {"team": "risk"})
    assert plinth.get_run(inner.id).metrics["loss"].last == 0.5


@pytest.mark.parametrize("value", [math.nan, math.inf, {"nested": [math.nan]}])
def test_non_finite_params_are_refused_everywhere(client: Client, value: object) -> None:
    run = client.start_run(experiment="churn")
    with pytest.raises(plinth.InvalidArgument, match="NaN and infinities"):
        run.log_param("p", value)
    run.end()
    assert client.get_run(run.id).params == {}


@pytest.mark.parametrize(
    "call",
    [
        lambda c, r: c.create_experiment("bad\ud800name"),
        lambda c, r: c.tracking.set_tags(r, {"k": "\ud800"}),
        lambda c, r: c.tracking.set_seed(r, 2**63),
        lambda c, r: c.tracking.close_stale_runs(math.nan),
        lambda c, r: c.search_runs(page_token="eyJvZmZzZXQiOiAxZTMwfQ=="),
    ],
    ids=["surrogate-name", "surrogate-tag", "seed-64bit", "nan-timeout", "huge-page-token"],
)
def test_values_a_store_cannot_hold_are_invalid_arguments(client: Client, call: Any) -> None:
    run = client.start_run(experiment="churn")
    with pytest.raises(plinth.InvalidArgument):
        call(client, run.id)
    assert len(client.search_runs(filter="number > 99999999999999999999999")) == 0
    run.end()
    assert client.get_run(run.id).status is RunStatus.FINISHED  # the store is intact

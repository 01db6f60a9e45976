"""The demo's first four steps, each through Plinth's public APIs on the demo's store:
the feature pipeline, training with tracking, the registry with gates, serving with
enrichment. Each step returns the one line the demo prints, with its key figure, and
keeps what it made in ``Demo.made`` (for the closing "where to look" and the tests)."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from plinth.client import Client
from plinth.demo.services import Loopback
from plinth.demo.world import FEATURES, KEY, LABEL, LABEL_DELAY, World, spine
from plinth.errors import InvalidArgument

GROUP = "customer_features"
VIEW = "churn"
MODEL = "churn"
EXPERIMENT = "churn"
GATE = "val/auc >= 0.55"
EPOCHS = 12


@dataclass
class Demo:
    """One run of the demo: its store's client, the generated world, and what it made."""

    client: Client
    world: World
    home: Path
    seed: int
    made: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Loopback] = field(default_factory=dict)
    background: dict[str, Any] = field(default_factory=dict)  # loops with stop()
    steps: list[dict[str, Any]] = field(default_factory=list)  # each step's line and time
    served: list[str] = field(default_factory=list)  # the shifted week's request ids, by customer
    setbacks: list[str] = field(default_factory=list)  # outcomes that cut the story short

    def end_early(self, why: str) -> None:
        """A step's outcome cut the story short (a refusal, a block): the step is shown
        marked, and the closing summary says the story ended early, and why."""
        self.setbacks.append(why)

    @property
    def data(self) -> Path:
        """Where the demo keeps the files a pipeline or a job reads (spines, inputs)."""
        folder = self.home / "demo-data"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def stop_services(self) -> None:
        for name in list(self.services):
            self.services.pop(name).stop()
        scheduler = self.background.pop("scheduler", None)
        if scheduler is not None:
            scheduler.stop()
            scheduler.close()  # its idle warm worker; a running one finishes its run
            for worker in scheduler.children.values():
                # a worker whose run is recorded as finished may still be exiting: reap
                # it rather than leave it behind unwaited (one still running runs on)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(10)


def feature_pipeline(demo: Demo) -> str:
    from plinth.features.types import Expectation

    fs = demo.client.feature_store()
    fs.create_entity("customer", join_keys=[KEY], description="a subscriber")
    history = demo.world.history
    group = fs.create_feature_group(
        GROUP,
        entity="customer",
        event_time="event_time",
        schema=history.dtypes,
        online=True,
        description="weekly usage and billing per customer",
    )
    expectations = [Expectation("not_null", column=c) for c in FEATURES] + [
        Expectation("range", column=c, min=0) for c in FEATURES
    ]
    fs.service.set_expectations(GROUP, group.version, expectations, mode="strict")
    # a broken upstream batch (negative spend) is refused whole: nothing is committed
    broken = history.head(50).assign(monthly_spend=-1.0)
    try:
        group.insert(broken)
        refused = "NOT refused"
    except InvalidArgument:
        refused = "refused"
    commit = group.insert(history)
    online = fs.materialize(GROUP)
    spend = next(s for s in commit.statistics if s.column == "monthly_spend")
    demo.made["feature_commit"] = commit.commit_version
    demo.made["feature_rows"] = commit.rows
    return (
        f"feature pipeline: {GROUP} v{group.version}: {commit.rows:,} rows "
        f"({len(demo.world.snapshots)} weekly snapshots) in ONE commit (Delta v{commit.commit_version}), "
        f"{len(expectations)} expectations passed, a bad batch {refused}; "
        f"statistics stored (mean monthly_spend {spend.mean:.1f}); {online:,} customers online"
    )


def training(demo: Demo) -> str:
    from sklearn.linear_model import SGDClassifier  # type: ignore[import-untyped]
    from sklearn.metrics import log_loss, roc_auc_score  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    fs = demo.client.feature_store()
    view = fs.create_feature_view(VIEW, [f"{GROUP}:{f}" for f in FEATURES], label=LABEL)
    labels = spine(demo.world, range(len(demo.world.snapshots) - 1))
    dataset = view.create_training_dataset(labels)
    rows = dataset.to_pandas()
    leaks, stale = _point_in_time_check(demo.world, rows)
    validation = (rows[KEY] % 5 == 0).to_numpy()
    X, y = rows[FEATURES], rows[LABEL].to_numpy()
    scaler = StandardScaler().fit(X[~validation])
    Xt, Xv = scaler.transform(X[~validation]), scaler.transform(X[validation])
    best: tuple[float, str] = (-1.0, "")
    for alpha in (1e-4, 1e-2):
        with demo.client.start_run(experiment=EXPERIMENT, name=f"linear-alpha-{alpha:g}") as run:
            run.seed(demo.seed)
            run.log_params({"model": "SGDClassifier", "loss": "log_loss"}, group="model")
            run.log_params({"alpha": alpha, "epochs": EPOCHS}, group="hyper")
            run.log_params({"view": VIEW, "rows": len(rows)}, group="data")
            sgd = SGDClassifier(loss="log_loss", alpha=alpha, random_state=demo.seed)
            for epoch in range(EPOCHS):
                sgd.partial_fit(Xt, y[~validation], classes=[0, 1])
                train_loss = log_loss(y[~validation], sgd.predict_proba(Xt)[:, 1])
                auc = roc_auc_score(y[validation], sgd.predict_proba(Xv)[:, 1])
                run.log_metrics({"train/loss": train_loss, "val/auc": auc}, step=epoch)
            run.log_input(dataset)  # the version registered from this run links to it
            run.log_model(make_pipeline(scaler, sgd), "model", input_example=X.head(5))
            best = max(best, (auc, run.id))
    demo.made["training_dataset"] = dataset.id
    demo.made["training_runs"] = 2
    demo.made["best_run"] = best[1]
    return (
        f"training: {len(rows):,} label rows joined point in time from {VIEW} (training set "
        f"#{dataset.id}; {leaks} rows read a later week, a latest-value join would have "
        f"changed {stale:,}); 2 runs x {EPOCHS} epochs tracked, best val/auc {best[0]:.3f}"
    )


def _point_in_time_check(world: World, rows: pd.DataFrame) -> tuple[int, int]:
    """Rows whose features are not the snapshot their label time saw (must be 0), and rows
    a join on each customer's newest values would have given other features."""
    seen = rows.assign(event_time=rows["event_timestamp"] - LABEL_DELAY)
    truth = seen[[KEY, "event_time"]].merge(world.history, on=[KEY, "event_time"], how="left")
    latest = rows[[KEY]].merge(world.snapshots[-1][[KEY, *FEATURES]], on=KEY, how="left")
    got = rows[FEATURES].to_numpy()
    wrong = ~np.isclose(got, truth[FEATURES].to_numpy()).all(axis=1)
    differs = ~np.isclose(got, latest[FEATURES].to_numpy()).all(axis=1)
    return int(wrong.sum()), int(differs.sum())


def registry(demo: Demo) -> str:
    from plinth.registry.gates import Gate
    from plinth.registry.types import Stage

    client = demo.client
    run = client.get_run(demo.made["best_run"])
    package = f"{run.experiment_id}/{run.id}/artifacts/model"
    version = client.registry.create_model_version(MODEL, package, run.id)
    client.registry.set_gates(MODEL, [Gate("metric", expression=GATE)])
    client.set_stage(MODEL, version.version, Stage.STAGING, reason="best run of the demo")
    client.set_stage(MODEL, version.version, Stage.PRODUCTION, reason="staging looked fine")
    demo.made["champion_version"] = version.version
    auc = run.metrics["val/auc"].last
    return (
        f"registry: {MODEL} v{version.version} registered from run {run.name} "
        f"(val/auc {auc:.3f}); gate '{GATE}' passed -> STAGING -> PRODUCTION"
    )


def serving(demo: Demo) -> str:
    import httpx

    from plinth.demo.services import model_service

    service = model_service(demo.client, f"models:/{MODEL}@production")
    demo.services["champion"] = service
    with httpx.Client(base_url=service.url, timeout=10) as http:
        answer = http.post("/predict", json={KEY: 42})
    if answer.status_code != 200:
        raise InvalidArgument(f"the model service refused customer 42: {answer.text}")
    body = answer.json()
    logged = _wait_for_prediction(demo.client, body["request_id"])
    demo.made["serving_request"] = body["request_id"]
    demo.made["serving_url"] = service.url
    return (
        f"serving: models:/{MODEL}@production (v{body['model_version']}) on {service.url}: "
        f'{{"customer_id": 42}} enriched with {len(FEATURES)} online features -> '
        f"prediction {body['predictions'][0]}; logged with its inputs (latency "
        f"{logged['latency_ms']:.1f} ms, "
        f"monthly_spend {logged['monthly_spend']:.2f})"
    )


def _wait_for_prediction(client: Client, request_id: str, timeout: float = 15.0) -> Any:
    """The logged row of ``request_id``: the log is written off the request path."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = client.read_predictions(MODEL)
        match = found[found["request_id"] == request_id]
        if len(match):
            return match.iloc[0]
        if time.monotonic() > deadline:
            raise InvalidArgument(f"prediction {request_id} was not logged in {timeout:g} s")
        time.sleep(0.2)

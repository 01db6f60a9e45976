"""The demo's loop: an A/B test between the champion and a challenger, drift injected into
later traffic, the monitor's alert, retraining triggered by it, the champion/challenger
decision and batch scoring. Same shape as ``story.py``: one function per step, each
returning its line and keeping what it made in ``Demo.made``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from plinth.demo import retrain
from plinth.demo.services import model_service, router_service
from plinth.demo.story import EXPERIMENT, GROUP, MODEL, Demo
from plinth.demo.world import FEATURES, KEY, LABEL, drifted_labels, drifted_split, renewed
from plinth.errors import Conflict, InvalidArgument
from plinth.store.sql import now_ms

AB = "churn-retention"
MONITOR = "churn-inputs"
PERFORMANCE = "churn-performance"
#: the accuracy the retention team needs from the served churn flags (the model service
#: answers with a class, not a probability, so AUC cannot be measured on its log)
MIN_ACCURACY = 0.75
STAGES = 100
SCORES = "scores/churn"


def ab_test(demo: Demo) -> str:
    from plinth.abtests.events import Event
    from plinth.abtests.types import Arm, Kpi, KpiKind
    from plinth.registry.types import Stage

    client = demo.client
    challenger = _train_challenger(demo)
    client.set_stage(MODEL, challenger, Stage.STAGING, reason="challenger for an A/B test")
    demo.services["challenger"] = model_service(client, f"models:/{MODEL}/{challenger}")
    arms = [
        Arm(
            "champion",
            0.5,
            model_uri=f"models:/{MODEL}@production",
            control=True,
        ),
        Arm(
            "challenger",
            0.5,
            model_uri=f"models:/{MODEL}/{challenger}",
        ),
    ]
    client.abtests.create_abtest(
        AB,
        hypothesis="retention offers to the customers the challenger flags keep more of them",
        primary=Kpi("renewal_rate", KpiKind.PROPORTION, "renewal"),
        arms=arms,
        mde=0.03,
    )
    client.abtests.start_abtest(AB, reason="the demo's experiment")
    urls = {arm: demo.services[arm].url for arm in ("champion", "challenger")}
    router = router_service(client, urls)
    try:
        answers = _route_everyone(router.url, demo.world.snapshots[-1][KEY].tolist())
    finally:
        router.stop()  # its exposure log is written out as it stops
    now = demo.world.snapshots[-1]
    offered = np.array([answers[c]["prediction"] == 1 for c in now[KEY]])
    kept = renewed(now, offered, np.random.default_rng(demo.seed + 5))
    at = now_ms()
    events = [
        Event(AB, "renewal", f"renewal-{c}", at, unit=f"customer-{c}")
        for c, stays in zip(now[KEY], kept, strict=True)
        if stays
    ]
    client.abtests.log_events(AB, events)
    results = client.abtests.abtest_results(AB)
    verdict = _handle_winner(demo, results)
    lift = results.primary["challenger"]
    demo.made["abtest"] = AB
    demo.made["abtest_units"] = dict(results.units_by_arm)
    shares = ", ".join(f"{a} {n:,}" for a, n in sorted(results.units_by_arm.items()))
    rates = " vs ".join(
        f"{a} {results.summaries[a].estimate:.1%}" for a in ("champion", "challenger")
    )
    relative = (
        ""
        if lift.relative_lift is None or lift.relative_ci is None
        else f" ({lift.relative_lift:+.1%} [{lift.relative_ci[0]:+.1%}, {lift.relative_ci[1]:+.1%}])"
    )
    return (
        f"A/B test {AB}: {sum(results.units_by_arm.values()):,} customers routed by hash "
        f"({shares}); renewals {rates}: lift {lift.absolute_lift * 100:+.1f} pts "
        f"[{lift.absolute_ci[0] * 100:+.1f}, {lift.absolute_ci[1] * 100:+.1f}]{relative}, "
        f"p={lift.p_value:.2g}; {verdict}"
    )


def _train_challenger(demo: Demo) -> int:
    """A gradient-boosting run on the same training set, tracked stage by stage, registered."""
    from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]
    from sklearn.metrics import log_loss, roc_auc_score  # type: ignore[import-untyped]

    client = demo.client
    dataset = client.feature_store().get_training_dataset(demo.made["training_dataset"])
    rows = dataset.to_pandas()
    validation = (rows[KEY] % 5 == 0).to_numpy()
    X, y = rows[FEATURES], rows[LABEL].to_numpy()
    with client.start_run(experiment=EXPERIMENT, name="gradient-boosting") as run:
        run.seed(demo.seed)
        params = {"n_estimators": STAGES, "max_depth": 3, "learning_rate": 0.1}
        run.log_params({"model": "GradientBoostingClassifier"}, group="model")
        run.log_params(params, group="hyper")
        model = GradientBoostingClassifier(**params, random_state=demo.seed)
        model.fit(X[~validation], y[~validation])
        train = model.staged_predict_proba(X[~validation])
        held = model.staged_predict_proba(X[validation])
        for stage, (pt, pv) in enumerate(zip(train, held, strict=True), start=1):
            if stage % 10 == 0:  # an "epoch": ten more trees
                run.log_metrics(
                    {
                        "train/loss": log_loss(y[~validation], pt[:, 1]),
                        "val/auc": roc_auc_score(y[validation], pv[:, 1]),
                    },
                    step=stage // 10 - 1,
                )
        run.log_input(dataset)
        run.log_model(model, "model", input_example=X.head(5))
    package = f"{run.experiment_id}/{run.id}/artifacts/model"
    version = client.registry.create_model_version(MODEL, package, run.id)
    demo.made["challenger_run"] = run.id
    return version.version


def _route_everyone(router: str, customers: list[int]) -> dict[int, dict[str, Any]]:
    """One request per customer through the router, four at a time."""
    import httpx

    with httpx.Client(base_url=router, timeout=30) as http:

        def ask(customer: int) -> tuple[int, dict[str, Any]]:
            answer = http.post(
                f"/{AB}/predict",
                json={KEY: customer},
                headers={"x-plinth-unit": f"customer-{customer}"},
            )
            if answer.status_code != 200:
                raise InvalidArgument(f"the router refused customer {customer}: {answer.text}")
            body = answer.json()
            return customer, {"prediction": body["predictions"][0], "arm": body["arm"]}

        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(pool.map(ask, customers))


def _handle_winner(demo: Demo, results: Any) -> str:
    """Promote the significant winner through the registry's gates; else stop and keep."""
    client = demo.client
    try:
        promotion = client.abtests.promote_abtest(AB, reason="significant renewal lift")
    except Conflict as refused:
        client.abtests.stop_abtest(AB, reason=f"no winner: {refused.message}")
        demo.made["abtest_winner"] = None
        return "no significant winner: stopped, the champion stays"
    version = promotion.model_version
    demo.made["abtest_winner"] = promotion.arm
    demo.made["champion_version"] = version.version
    return (
        f"winner {promotion.arm}: {MODEL} v{version.version} -> PRODUCTION through the gates, "
        "experiment stopped"
    )


def drift(demo: Demo) -> str:
    """Arm the monitor on calm traffic, then the shifted week arrives and is served."""
    from plinth.monitoring.types import MonitorSpec
    from plinth.pipelines.types import PipelineSpec, ScheduleSpec

    client = demo.client
    champion = demo.made["champion_version"]
    _wait_for_version(demo.services["champion"].url, champion)  # the hot swap
    client.monitors.create_monitor(
        MONITOR, "input_drift", MODEL, MonitorSpec(window_seconds=3_600, max_drifted_share=0.5)
    )
    calm = client.monitors.run_monitor(MONITOR)
    client.pipelines.register_pipeline(
        PipelineSpec(name=retrain.NAME, entrypoint=retrain.ENTRYPOINT, timeout_seconds=300)
    )
    client.pipelines.create_schedule(retrain.NAME, ScheduleSpec(kind="alert", target=MONITOR))
    start_scheduler(demo)
    fs = client.feature_store()
    shifted = demo.world.drifted
    commit = fs.insert(GROUP, shifted)
    fs.materialize(GROUP)
    # the labels of the shifted week, as a labelling job would leave them
    labels, holdout = drifted_split(demo.world)
    labels.to_parquet(demo.data / retrain.SPINE_FILE)
    holdout.to_parquet(demo.data / retrain.HOLDOUT_FILE)
    answers = _serve_everyone(demo.services["champion"].url, shifted[KEY].tolist())
    versions = sorted({a["model_version"] for a in answers})
    verdict = commit.drift or {}
    drifted = [c["column"] for c in verdict.get("columns", []) if c.get("drifted")]
    before = demo.world.snapshots[-1]
    demo.made["calm_evaluation"] = calm.status
    demo.made["drift_commit"] = commit.commit_version
    demo.made["drift_requests"] = len(answers)
    demo.made["served_version"] = versions[-1]
    demo.served = [a["request_id"] for a in answers]  # in the order of the customers
    return (
        f"drift: {MONITOR} armed (calm traffic: {calm.status}); the shifted week written "
        f"(commit v{commit.commit_version}, drift on write: "
        f"{len(drifted)} of {verdict.get('tested_columns', '?')} columns drifted "
        f"({', '.join(drifted) or '-'})); "
        f"{len(answers):,} later requests served by v{'/v'.join(map(str, versions))} "
        f"(support calls {before.support_calls_30d.mean():.1f} -> "
        f"{shifted.support_calls_30d.mean():.1f}, logins {before.logins_30d.mean():.1f} -> "
        f"{shifted.logins_30d.mean():.1f})"
    )


def _wait_for_version(url: str, version: int, timeout: float = 15.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        served = httpx.post(f"{url}/predict", json={KEY: 1}, timeout=10).json()
        if served.get("model_version") == version:
            return
        if time.monotonic() > deadline:
            raise InvalidArgument(f"the model service did not swap to v{version}")
        time.sleep(0.2)


def _serve_everyone(url: str, customers: list[int]) -> list[dict[str, Any]]:
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:

        def ask(customer: int) -> dict[str, Any]:
            answer = http.post("/predict", json={KEY: customer})
            if answer.status_code != 200:
                raise InvalidArgument(f"the model service refused {customer}: {answer.text}")
            found: dict[str, Any] = answer.json()
            return found

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(ask, customers))


def monitor(demo: Demo) -> str:
    client = demo.client
    demo.services["champion"].stop()  # its prediction log is written out as it stops
    del demo.services["champion"]
    evaluation = client.monitors.run_monitor(MONITOR)
    result = evaluation.result
    report = result.get("report") or {}
    found = (
        f"{report['drifted_columns']} of {report['tested_columns']} inputs drifted "
        f"({', '.join(result.get('drifted_columns', [])) or '-'}) in the last hour's "
        f"{result.get('rows', 0):,} predictions of v{result.get('version')} against its training data"
        if "tested_columns" in report
        else evaluation.summary
    )
    demo.made["alert"] = evaluation.alert_id
    raised = "no alert" if evaluation.alert_id is None else f"alert #{evaluation.alert_id}"
    return f"monitor {MONITOR}: {evaluation.status}: {found} -> {raised}; {_performance(demo)}"


def _performance(demo: Demo) -> str:
    """The shifted week's churn becomes known: its late labels are logged against the
    served predictions, and a performance monitor measures the serving version on them."""
    from plinth.monitoring.labels import LabelIn
    from plinth.monitoring.types import MonitorSpec

    client = demo.client
    churned = drifted_labels(demo.world).tolist()
    labels = [LabelIn(int(y), request_id=r) for r, y in zip(demo.served, churned, strict=True)]
    for start in range(0, len(labels), 10_000):  # the most one call takes
        client.log_labels(MODEL, labels[start : start + 10_000])
    version = demo.made["served_version"]
    client.monitors.create_monitor(
        PERFORMANCE,
        "performance",
        MODEL,
        MonitorSpec(
            window_seconds=3_600, metric="accuracy", min_value=MIN_ACCURACY, model_version=version
        ),
    )
    evaluation = client.monitors.run_monitor(PERFORMANCE)
    result = evaluation.result
    metric = "accuracy"
    measured = [w["metrics"][metric] for w in result.get("windows", []) if metric in w["metrics"]]
    demo.made["performance"] = evaluation.status
    demo.made["performance_alert"] = evaluation.alert_id
    if not measured:
        return f"{PERFORMANCE}: {evaluation.summary}"
    found = measured[-1]
    interval = "" if found["lower"] is None else f" [{found['lower']:.3f}, {found['upper']:.3f}]"
    bounds = result.get("checked", {}).get("bounds", [])
    against = f" vs {bounds[0]['why'].removeprefix('below ')}" if bounds else ""
    raised = "" if evaluation.alert_id is None else f" -> alert #{evaluation.alert_id}"
    return (
        f"{len(labels):,} late labels logged; {PERFORMANCE}: {evaluation.status}: v{version} "
        f"{metric} {found['value']:.3f}{interval} on {found['n']:,} labelled predictions"
        f"{against}{raised}"
    )


def start_scheduler(demo: Demo) -> Any:
    """The pipeline scheduler, as ``plinth scheduler`` runs it: ticking in the background
    under its lease, a warm worker ready; it starts a run for each new alert."""
    import os

    from plinth.pipelines.scheduler import Scheduler

    scheduler = Scheduler(
        demo.client,
        max_workers=1,
        pass_env=["PYTHONPATH"] if "PYTHONPATH" in os.environ else [],
    )
    scheduler.start()
    demo.background["scheduler"] = scheduler
    return scheduler


def retraining(demo: Demo) -> str:
    client = demo.client
    if demo.made.get("alert") is None:
        demo.end_early("the monitor raised no alert, so nothing triggered retraining")
        return "retraining: not triggered (no alert)"
    started = time.monotonic()
    run = _triggered_run(demo, demo.made["alert"])
    seconds = time.monotonic() - started
    demo.made["pipeline_run"] = run.id
    if run.status != "succeeded":
        raise InvalidArgument(f"retraining run #{run.id} {run.status}: {run.error}")
    done = [s.name for s in client.pipelines.get_run(run.id).steps if s.status == "succeeded"]
    return (
        f"retraining: pipeline {retrain.NAME} run #{run.id} started by the scheduler on "
        f"alert #{run.alert_id} (trigger {run.trigger}); {len(done)} steps succeeded "
        f"({' > '.join(done)}), {seconds:.1f} s from alert to decision"
    )


def _triggered_run(demo: Demo, alert: int, timeout: float = 120.0) -> Any:
    """The run the scheduler started for ``alert``, once it has finished."""
    client = demo.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.pipelines.list_runs(retrain.NAME).items
        mine = [r for r in runs if r.alert_id == alert]
        if mine and mine[0].status not in ("queued", "running"):
            return mine[0]
        time.sleep(0.2)
    raise InvalidArgument(f"no retraining run for alert #{alert} finished in {timeout:g} s")


def decision(demo: Demo) -> str:
    if demo.made.get("pipeline_run") is None:
        demo.end_early("no retraining ran, so there was no decision")
        return "champion/challenger: no retraining, no decision"
    client = demo.client
    (found,) = client.list_decisions(pipeline_run=demo.made["pipeline_run"]).items
    demo.made["decision"] = found.outcome
    if found.outcome == "promoted":
        demo.made["champion_version"] = found.version
    else:
        why = _why_kept(found)
        demo.end_early(f"the retrained v{found.challenger_version} was {found.outcome}: {why}")
    rows = found.evidence.get("holdout", {}).get("rows", "?")
    champion = (
        "no champion"
        if found.champion_score is None
        else f"champion v{found.champion_version} {found.champion_score:.3f}"
    )
    return (
        f"champion/challenger: challenger v{found.challenger_version} auc "
        f"{found.challenger_score:.3f} vs {champion} on the same {rows}-row holdout -> "
        f"{found.outcome}{'' if found.outcome == 'promoted' else f' ({_why_kept(found)})'}"
    )


def _why_kept(found: Any) -> str:
    gate = found.evidence.get("gate_failed")
    return f"gate failed: {gate}" if gate else str(found.reason)


def batch_scoring(demo: Demo) -> str:
    from deltalake import DeltaTable

    from plinth.serving.batch import score
    from plinth.serving.checks import ChecksFailed

    customers = demo.world.drifted[[KEY]].assign(
        event_timestamp=pd.Timestamp(demo.world.now).tz_convert("UTC")
    )
    customers["event_timestamp"] = customers["event_timestamp"].astype("datetime64[us, UTC]")
    source = demo.data / "customers-to-score.parquet"
    customers.to_parquet(source)
    output = demo.home / SCORES
    try:
        result = score(demo.client, f"models:/{MODEL}@production", str(source), str(output))
    except ChecksFailed as blocked:  # the job is recorded with its checks, nothing delivered
        demo.made["score_rows"] = 0
        demo.end_early(f"batch scoring was blocked by its checks: {blocked.message}")
        return f"batch scoring: blocked by its checks before delivery: {blocked.message}"
    table = DeltaTable(str(output)).to_pandas()
    flagged = float((table["score"] == 1).mean())
    passed = sum(1 for c in result.checks if c.passed)
    demo.made["scores"] = str(output)
    demo.made["score_rows"] = len(table)
    return (
        f"batch scoring: {result.rows:,} customers scored by models:/{MODEL}@production "
        f"(v{result.model_version}) into {SCORES} (Delta v{result.output_version}; "
        f"{passed}/{len(result.checks)} checks passed); {flagged:.0%} flagged to churn"
    )

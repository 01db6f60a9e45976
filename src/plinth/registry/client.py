"""The registry's caller-side methods of ``plinth.Client``: packaging, upload, loading,
holdout scoring and champion/challenger adjudication (the work that needs the model)."""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plinth.registry.types import MANIFEST_FILE, dataset_id

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from plinth.config import Settings
    from plinth.registry.gates import Gate
    from plinth.registry.predictor import Predictor
    from plinth.registry.service import RegistryService
    from plinth.registry.types import Decision, HistoryEntry, ModelVersion, Signature, Stage
    from plinth.tracking.service import TrackingService
    from plinth.tracking.types import Page, Run


class RegistryClient:
    tracking: TrackingService
    registry: RegistryService
    settings: Settings
    remote: bool

    # -- registering -------------------------------------------------------------------

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        signature: Signature | None = None,
        flavor: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        training_dataset: Any = None,
    ) -> ModelVersion:
        """Register a model object (or a saved package folder) as the next version of
        ``name``; ``training_dataset`` (one made by ``create_training_dataset``, or its id)
        records the exact data it was trained on."""
        from plinth.registry.uris import check_model_name

        check_model_name(name)
        package = f"models/{name}/packages/{uuid.uuid4().hex}"
        try:
            with tempfile.TemporaryDirectory(prefix="plinth-model-") as tmp:
                folder = self._packaged(model, Path(tmp), input_example, signature, flavor)
                self._upload_package(folder, package)
            return self.registry.create_model_version(
                name, package, None, description, tags, dataset_id(training_dataset)
            )
        except Exception:
            # No version exists without its whole package (the service checks every file);
            # locally a partial upload is removed as well.
            if not self.remote:
                self.registry.artifacts.delete(package)
            raise

    def _packaged(
        self,
        model: Any,
        tmp: Path,
        input_example: Any,
        signature: Signature | None,
        flavor: str | None,
    ) -> Path:
        if isinstance(model, str | Path) and (Path(model) / MANIFEST_FILE).is_file():
            return Path(model)
        from plinth.registry.package import save_package

        save_package(model, tmp, flavor=flavor, input_example=input_example, signature=signature)
        return tmp

    def _upload_package(self, folder: Path, dest: str) -> None:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for file in files:
            target = f"{dest}/{file.relative_to(folder).as_posix()}"
            with open(file, "rb") as source:
                if self.remote:
                    self.registry.upload_package_file(target, source)  # type: ignore[attr-defined]
                else:
                    _copy(source, self.registry.artifacts.open_write(target))

    # -- reading -----------------------------------------------------------------------

    def get_model_version(self, model: str, version: int | None = None) -> ModelVersion:
        """A version by URI (``models:/churn@production``, ``models:/churn/3``) or by name
        and number. A bare name is refused: it does not say which version."""
        from plinth.errors import InvalidArgument
        from plinth.registry.uris import which_version

        if model.startswith("models:/"):
            return self.registry.resolve(model)
        if model.startswith("runs:/"):
            raise InvalidArgument(
                f"{model!r} is a model logged in a run, not a registered version: load_model "
                "takes it; register it to get a version"
            )
        if version is None:
            raise InvalidArgument(which_version(model))
        return self.registry.get_model_version(model, version)

    def load_model(self, uri: str, *, trust_pickle: bool = False) -> Predictor:
        """A predictor for a model URI: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``
        (or ``@production``, ``@latest``…), or ``runs:/RUN_ID/PATH`` for a package logged in
        a run. Its files are checked against their sha256 first, and a registered version's
        manifest against the one recorded when it was registered.

        A pickled package (a pyfunc model, or one saved before safe formats) is refused with
        PermissionDenied before anything is unpickled: unpickling runs code from whoever
        registered it. ``trust_pickle=True``, or the store's policy (the ``trust_pickle``
        setting, ``PLINTH_TRUST_PICKLE``), allows it."""
        from plinth.registry.package import load_package
        from plinth.registry.predictor import Predictor

        trusted = self.trusts_pickle(trust_pickle)
        if uri.startswith("runs:/"):
            return self._load_run_model(uri, trusted)
        mv = self.get_model_version(uri)
        folder = self._cached_package(mv)
        # against the registry's record, not only the folder's own manifest
        manifest, native = load_package(
            folder,
            trust_pickle=trusted,
            recorded=mv.manifest,
            recorded_sha256=mv.manifest_sha256,
            what=mv.uri,
        )
        return Predictor(manifest, native, model_name=mv.model_name, version=mv.version)

    def trusts_pickle(self, trust_pickle: bool = False) -> bool:
        """Whether a pickled package may load: the caller's word or the store's policy (the
        caller can only add trust, never take the policy's away)."""
        return trust_pickle or self.settings.trust_pickle

    def _load_run_model(self, uri: str, trust_pickle: bool) -> Predictor:
        import io

        from plinth.errors import NotFound
        from plinth.registry.package import load_package, parse_manifest
        from plinth.registry.predictor import Predictor
        from plinth.registry.uris import parse_runs_uri

        run_id, path = parse_runs_uri(uri)
        self.tracking.get_run(run_id)  # NotFound naming the run
        raw = io.BytesIO()
        try:
            self._download_run_file(run_id, f"{path}/{MANIFEST_FILE}", raw)
        except NotFound:
            raise NotFound(
                f"no model package at {uri}: {path}/{MANIFEST_FILE} is missing"
            ) from None
        manifest = parse_manifest(raw.getvalue(), uri)
        identity = f"{self.registry_identity()}|{run_id}|{path}|{sorted(manifest.files.items())}"

        def fetch(file: str, out: IO[bytes]) -> None:
            if file == MANIFEST_FILE:
                out.write(raw.getvalue())
            else:
                self._download_run_file(run_id, f"{path}/{file}", out)

        folder = self._cached(f"runs/{run_id}", identity, [MANIFEST_FILE, *manifest.files], fetch)
        manifest, native = load_package(
            folder, trust_pickle=trust_pickle, recorded=manifest, what=uri
        )
        return Predictor(manifest, native)

    def _download_run_file(self, run_id: str, path: str, out: IO[bytes]) -> None:
        if self.remote:
            self.tracking.download_artifact(run_id, path, out)  # type: ignore[attr-defined]
        else:
            with self.tracking.open_artifact_reader(run_id, path) as source:
                _copy(source, out, close=False)

    def _cached_package(self, mv: ModelVersion) -> Path:
        # Packages are immutable: one download per version of one store, checked at every load.
        identity = f"{self.registry_identity()}|{mv.model_name}|{mv.version}|{sorted(mv.manifest.files.items())}"
        return self._cached(
            f"models/{mv.model_name}",
            identity,
            [MANIFEST_FILE, *mv.manifest.files],
            lambda file, out: self._download_package_file(mv, file, out),
        )

    def _cached(
        self, kind: str, identity: str, files: list[str], fetch: Callable[[str, IO[bytes]], None]
    ) -> Path:
        # A download per identity (store, package, the files' sha256s) into the home's cache.
        import hashlib
        import shutil

        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        folder = Path(self.settings.home).resolve() / "cache" / kind / digest
        if (folder / MANIFEST_FILE).is_file():
            return folder
        partial = folder.with_name(f".{digest}-{uuid.uuid4().hex[:8]}")
        try:
            for file in files:
                target = partial / file
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    fetch(file, out)
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                partial.rename(folder)
            except OSError:
                if not (folder / MANIFEST_FILE).is_file():  # another loader won the race: fine
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return folder

    def registry_identity(self) -> str:
        """Which registry this client talks to (keeps caches of different stores apart)."""
        if self.remote:
            return str(self.registry.transport.base_url)  # type: ignore[attr-defined]
        return f"{self.registry.store.uri}|{self.registry.artifacts.uri()}"

    def _download_package_file(self, mv: ModelVersion, file: str, out: IO[bytes]) -> None:
        if self.remote:
            self.registry.download_package_file(mv.model_name, mv.version, file, out)  # type: ignore[attr-defined]
        else:
            with self.registry.open_package_file(mv.model_name, mv.version, file) as source:
                _copy(source, out, close=False)

    def model_history(self, name: str) -> list[HistoryEntry]:
        return self.registry.model_history(name)

    # -- stages and aliases ------------------------------------------------------------

    def set_stage(
        self,
        name: str,
        version: int,
        stage: Stage | str,
        reason: str = "",
        *,
        allow_archived: bool = False,
        holdout: tuple[Any, Any] | None = None,
        trust_pickle: bool = False,
    ) -> ModelVersion:
        """Move a version to a stage. With ``holdout=(X, y)`` the candidate and the current
        production version are scored on it for the model's ``not_worse`` gates (loading a
        pickled one needs ``trust_pickle``, as ``load_model`` does)."""
        from plinth.registry.types import Stage as Stages

        evidence = (
            self._holdout_evidence(name, version, holdout, trust_pickle)
            if holdout is not None
            else None
        )
        return self.registry.set_stage(
            name, version, Stages.parse(stage), reason, allow_archived, evidence
        )

    def _holdout_evidence(
        self, name: str, version: int, holdout: tuple[Any, Any], trust_pickle: bool
    ) -> dict[str, Any]:
        production = self._production_or_none(name)
        gates: list[Gate] = self.registry.get_gates(name)
        metrics = [g.metric for g in gates if g.kind == "not_worse"]
        if not metrics or production is None:
            return {}
        metric = metrics[0]
        return {
            "holdout": {
                "metric": metric,
                "candidate": self._score(
                    f"models:/{name}/{version}", metric, holdout, trust_pickle
                ),
                "production": self._score(production.uri, metric, holdout, trust_pickle),
                "production_version": production.version,
            }
        }

    def _score(self, uri: str, metric: str, holdout: tuple[Any, Any], trust_pickle: bool) -> float:
        from plinth.registry.scoring import score

        predictor = self.load_model(uri, trust_pickle=trust_pickle)
        wants_scores = metric.lower().endswith("auc") and hasattr(predictor.native, "predict_proba")
        return score(
            metric, predictor.predict_proba if wants_scores else predictor.predict, holdout
        )

    def set_alias(self, name: str, alias: str, version: int, reason: str = "") -> ModelVersion:
        return self.registry.set_alias(name, alias, version, reason)

    def rollback(self, name: str, reason: str = "") -> ModelVersion:
        """Restore the previous PRODUCTION version (recorded in the history)."""
        return self.registry.rollback(name, reason)

    # -- champion / challenger ---------------------------------------------------------

    def register_best(
        self,
        experiment: str,
        metric: str,
        direction: str = "max",
        model: str | None = None,
        holdout: tuple[Any, Any] | None = None,
        artifact_path: str = "model",
        trust_pickle: bool = False,
    ) -> Decision:
        """Find the experiment's best run on ``metric``, compare it with the production
        version (on ``holdout`` when given, else on the logged metric), register and promote
        it only if it is better; the decision is recorded in the history either way.
        Scoring a pickled model on the holdout needs ``trust_pickle``, as ``load_model``."""
        from plinth.errors import InvalidArgument

        _check_direction(direction)
        order = "DESC" if direction == "max" else "ASC"
        ident = f"metrics.`{metric}`"
        best = self.tracking.search_runs(
            f"{ident} is not null and status = 'FINISHED'", [f"{ident} {order}"], [experiment], 1
        )
        if not best.items:
            raise InvalidArgument(
                f"experiment {experiment!r} has no finished run with metric {metric!r}"
            )
        trial = _Trial(model or experiment, best.items[0], metric, direction, artifact_path)
        return self._decide(trial, holdout, trust_pickle, register_kept=False)

    def adjudicate(
        self,
        model: str,
        run_id: str,
        metric: str,
        direction: str = "max",
        holdout: tuple[Any, Any] | None = None,
        *,
        artifact_path: str = "model",
        trust_pickle: bool = False,
        key: str | None = None,
        pipeline_run: int | None = None,
        alert_id: int | None = None,
    ) -> Decision:
        """Champion/challenger for one run: register the model it logged at
        ``artifact_path`` as a version of ``model`` (the version already registered from the
        run is reused), score it and the PRODUCTION champion on the same ``holdout`` (else
        compare the logged ``metric``), promote it through the gates only if it is better,
        and record the decision with its evidence either way (a refusing gate: "kept", the
        version stays registered).

        ``key`` makes it idempotent: a decision already recorded under it is returned and
        nothing is done again, and a promotion an earlier attempt made but did not record is
        recognised and recorded, never repeated."""
        _check_direction(direction)
        with _Adjudicating(self, model) as held:
            if key is not None:
                recorded = self._decision_or_none(key)
                if recorded is not None:
                    return _own(recorded, model)
            run = self.tracking.get_run(run_id)
            trial = _Trial(
                model, run, metric, direction, artifact_path, key, pipeline_run, alert_id
            )
            return self._decide(trial, holdout, trust_pickle, register_kept=True, held=held)

    def _decide(
        self,
        trial: _Trial,
        holdout: tuple[Any, Any] | None,
        trust_pickle: bool,
        register_kept: bool,
        held: _Adjudicating | None = None,
    ) -> Decision:
        from plinth.errors import GateFailed
        from plinth.registry.types import Stage as Stages

        name = trial.model
        existing = self._version_of_run(trial)
        champion = self._production_or_none(name)
        if existing is not None and champion is not None and existing.version == champion.version:
            recovered = self._promoted_earlier(trial, existing)
            if recovered is not None:
                return self._record(recovered, held)
        mine, theirs, evidence = self._scores(trial, existing, champion, holdout, trust_pickle)
        _check_finite(mine, f"run {trial.run.id}'s {trial.metric!r}", "the challenger")
        if champion is not None and theirs is not None:
            _check_finite(
                theirs,
                f"the champion v{champion.version}'s {trial.metric!r}",
                f"the champion (v{champion.version} of {name!r}); an operator must look at it",
            )
        if champion is None:
            better, versus = True, "no champion"
        elif theirs is None:
            # a champion that cannot be compared is not beaten
            better = False
            versus = (
                f"champion v{champion.version}, which has no {trial.metric!r} to compare "
                "(registered without that metric): not compared, the champion stays; "
                "pass holdout=(X, y) to score both on the same data"
            )
        else:
            better = mine > theirs if trial.direction == "max" else mine < theirs
            versus = f"champion v{champion.version} {theirs:.6g}"
        reason = f"run {trial.run.name} {trial.metric}={mine:.6g} vs {versus}"
        version = existing
        if version is None and (better or register_kept):
            version = self.registry.create_model_version(name, trial.package, trial.run.id)
        outcome = "kept"
        if better and version is not None:
            if held is not None:
                held.check()
            try:
                self.registry.set_stage(
                    name,
                    version.version,
                    Stages.PRODUCTION,
                    f"champion/challenger: {reason}",
                    False,
                    evidence,
                )
                outcome = "promoted"
            except GateFailed as exc:
                reason += f"; registered as v{version.version} but not promoted: {exc}"
                evidence = {**evidence, "gate_failed": str(exc)}
        elif champion is not None and version is not None and version.version == champion.version:
            reason += f"; v{version.version} is already the champion"
        return self._record(
            trial.decision(outcome, mine, champion, theirs, version, reason, evidence), held
        )

    def _scores(
        self,
        trial: _Trial,
        existing: ModelVersion | None,
        champion: ModelVersion | None,
        holdout: tuple[Any, Any] | None,
        trust_pickle: bool,
    ) -> tuple[float, float | None, dict[str, Any]]:
        """The challenger's and the champion's scores, and the evidence a not_worse gate and
        a later reader need (the challenger is scored before it is registered: a model that
        cannot be scored leaves no version behind)."""
        from plinth.errors import InvalidArgument

        metric = trial.metric
        theirs: float | None
        if holdout is not None:
            mine = (
                self._score(existing.uri, metric, holdout, trust_pickle)
                if existing is not None
                else self._score_package(trial.package, trial.run.id, metric, holdout, trust_pickle)
            )
            theirs = self._score(champion.uri, metric, holdout, trust_pickle) if champion else None
        else:
            if metric not in trial.run.metrics:
                raise InvalidArgument(
                    f"run {trial.run.id} has no metric {metric!r}: log it, or pass holdout=(X, y)"
                )
            mine = trial.run.metrics[metric].last
            theirs = champion.lineage.get("metrics", {}).get(metric) if champion else None
        evidence: dict[str, Any] = {
            "key": trial.key,
            "run_id": trial.run.id,
            "metric": metric,
            "direction": trial.direction,
            "scored_on": "holdout" if holdout is not None else "logged metrics",
            "challenger_score": mine,
            "champion_version": champion.version if champion else None,
            "champion_score": theirs,
        }
        if holdout is not None:
            evidence["holdout"] = {
                "metric": metric,
                "rows": len(holdout[1]),
                "candidate": mine,
                "production": theirs,
                "production_version": champion.version if champion else None,
            }
        return mine, theirs, evidence

    def _version_of_run(self, trial: _Trial) -> ModelVersion | None:
        return self.registered_from_run(trial.model, trial.run.id, trial.artifact_path)

    def registered_from_run(
        self, model: str, run_id: str, artifact_path: str = "model"
    ) -> ModelVersion | None:
        """The version of ``model`` registered from the package run ``run_id`` logged at
        ``artifact_path`` (the first, if an earlier attempt registered it twice); None when
        there is none: what makes registering a run's model idempotent."""
        from plinth.errors import NotFound

        try:
            found = self.registry.search_model_versions(name=model, run_id=run_id)
        except NotFound:
            return None
        suffix = f"/{run_id}/artifacts/{artifact_path}"
        mine = [v for v in found if v.model_name == model and v.package_uri.endswith(suffix)]
        return min(mine, key=lambda v: v.version) if mine else None

    def _promoted_earlier(self, trial: _Trial, version: ModelVersion) -> Decision | None:
        """The decision an earlier attempt under the same key made but did not record: it
        promoted ``version`` (its stage change carries the evidence and the key)."""
        if trial.key is None:
            return None
        entry = next(
            (
                h
                for h in reversed(self.registry.model_history(trial.model))
                if h.action == "stage"
                and h.version == version.version
                and h.to_value == "PRODUCTION"
            ),
            None,
        )
        evidence = (entry.details.get("evidence") or {}) if entry is not None else {}
        if evidence.get("key") != trial.key:
            return None
        assert entry is not None
        reason = (
            f"{entry.reason.removeprefix('champion/challenger: ')}; v{version.version} was "
            f"promoted at {entry.at.isoformat()} by an earlier attempt, recorded now"
        )
        return trial.decision(
            "promoted",
            float(evidence["challenger_score"]),
            None,
            evidence.get("champion_score"),
            version,
            reason,
            {**evidence, "recovered_from_history": entry.id},
            champion_version=evidence.get("champion_version"),
        )

    def _record(self, decision: Decision, held: _Adjudicating | None = None) -> Decision:
        from plinth.errors import Conflict

        if held is not None:
            held.check()
        try:
            return self.registry.record_decision(decision.model_name, decision)
        except Conflict:
            if decision.key is None:
                raise
            # another attempt under the same key recorded first: its decision stands (if it
            # is about this model)
            return _own(self.registry.get_decision(decision.key), decision.model_name)

    def _decision_or_none(self, key: str) -> Decision | None:
        from plinth.errors import NotFound

        try:
            return self.registry.get_decision(key)
        except NotFound:
            return None

    def list_decisions(
        self,
        name: str | None = None,
        pipeline_run: int | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Decision]:
        """Recorded champion/challenger decisions, newest first (see ``adjudicate``)."""
        return self.registry.list_decisions(name, pipeline_run, max_results, page_token)

    def _production_or_none(self, name: str) -> ModelVersion | None:
        from plinth.errors import NotFound

        try:
            return self.registry.resolve(f"models:/{name}@production")
        except NotFound:
            return None

    def _score_package(
        self,
        package: str,
        run_id: str,
        metric: str,
        holdout: tuple[Any, Any],
        trust_pickle: bool,
    ) -> float:
        from plinth.registry.package import load_package
        from plinth.registry.predictor import Predictor
        from plinth.registry.scoring import score

        with tempfile.TemporaryDirectory(prefix="plinth-challenger-") as tmp:
            prefix = package.split("/artifacts/", 1)[1]
            for entry in self._walk_artifacts(run_id, prefix):
                target = Path(tmp) / entry[len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.read_artifact(run_id, entry))  # type: ignore[attr-defined]
            manifest, native = load_package(
                Path(tmp),
                trust_pickle=self.trusts_pickle(trust_pickle),
                what=f"the model of run {run_id}",
            )
            predictor = Predictor(manifest, native)
            wants_scores = metric.lower().endswith("auc") and hasattr(native, "predict_proba")
            return score(
                metric, predictor.predict_proba if wants_scores else predictor.predict, holdout
            )

    def _walk_artifacts(self, run_id: str, path: str) -> list[str]:
        found = []
        for entry in self.tracking.list_artifacts(run_id, path):
            found.extend(self._walk_artifacts(run_id, entry.path) if entry.is_dir else [entry.path])
        return found


def _check_direction(direction: str) -> None:
    from plinth.errors import InvalidArgument

    if direction not in ("max", "min"):
        raise InvalidArgument(f"direction must be 'max' or 'min', not {direction!r}")


@dataclass(frozen=True)
class _Trial:
    """One adjudication's question: may this run's model replace the champion of ``model``?"""

    model: str
    run: Run
    metric: str
    direction: str
    artifact_path: str
    key: str | None = None
    pipeline_run: int | None = None
    alert_id: int | None = None

    @property
    def package(self) -> str:
        return f"{self.run.experiment_id}/{self.run.id}/artifacts/{self.artifact_path}"

    def decision(
        self,
        outcome: str,
        mine: float,
        champion: ModelVersion | None,
        theirs: float | None,
        version: ModelVersion | None,
        reason: str,
        evidence: dict[str, Any],
        champion_version: int | None = None,
    ) -> Decision:
        from plinth.registry.types import Decision

        number = version.version if version is not None else None
        return Decision(
            outcome,
            self.model,
            self.metric,
            self.direction,
            self.run.id,
            mine,
            champion.version if champion is not None else champion_version,
            theirs,
            number if outcome == "promoted" else None,
            reason,
            challenger_version=number,
            key=self.key,
            pipeline_run=self.pipeline_run,
            alert_id=self.alert_id,
            evidence=evidence,
        )


class _Adjudicating:
    """The lease that lets one adjudication of a model run at a time (through the
    registry's ``hold_adjudication``, so a remote client holds it too): taken on entry
    (Conflict when another adjudication holds it), renewed from a thread while the
    adjudication runs, checked before it promotes or records, given up on exit."""

    def __init__(self, client: RegistryClient, model: str) -> None:
        from plinth.store.lease import new_holder

        self.registry = client.registry
        self.model = model
        self.holder = new_holder()
        self.lost = False
        self._over = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> _Adjudicating:
        from plinth.errors import Conflict

        if not self.registry.hold_adjudication(self.model, self.holder):
            raise Conflict(
                f"another adjudication of model {self.model!r} is under way: try again once "
                "it is over"
            )
        self._beat = threading.Thread(
            target=self._renew, name=f"adjudicate:{self.model}-lease", daemon=True
        )
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._over.set()
        if self._beat is not None:
            self._beat.join()
        try:
            self.registry.hold_adjudication(self.model, self.holder, True)
        except Exception:  # the store or server is away: the lease expires by itself
            _log.warning("could not give up the adjudication lease of %r", self.model)

    def check(self) -> None:
        """Renew the lease now; Conflict when it was lost (this attempt stalled past it)."""
        from plinth.errors import Conflict

        if self.lost or not self.registry.hold_adjudication(self.model, self.holder):
            self.lost = True
            raise Conflict(
                f"the adjudication of model {self.model!r} lost its lease (it stalled for "
                "longer than the lease lasts): another adjudication may be under way"
            )

    def _renew(self) -> None:
        from plinth.registry.service import ADJUDICATION_LEASE_SECONDS

        while not self._over.wait(ADJUDICATION_LEASE_SECONDS / 4):
            try:
                if not self.registry.hold_adjudication(self.model, self.holder):
                    self.lost = True
                    return
            except Exception:  # away for a moment: try again on the next beat
                _log.warning("could not renew the adjudication lease of %r", self.model)


def _own(recorded: Decision, model: str) -> Decision:
    """A decision found under an adjudication's key, if it is about the same model."""
    from plinth.errors import Conflict

    if recorded.model_name != model:
        raise Conflict(
            f"key {recorded.key!r} already decided about model {recorded.model_name!r}, not "
            f"{model!r}: use a key of its own for each model"
        )
    return recorded


def _check_finite(score: float, what: str, whose: str) -> None:
    from plinth.errors import InvalidArgument

    if not math.isfinite(score):
        raise InvalidArgument(
            f"{what} is {score!r}: a score to compare is a finite number; fix or re-score {whose}"
        )


def _copy(source: IO[bytes], out: IO[bytes], close: bool = True) -> None:
    try:
        while block := source.read(1024 * 1024):
            out.write(block)
    finally:
        if close:
            out.close()

"""The registry's caller-side methods of ``plinth.Client``: packaging, upload, loading,
holdout scoring and champion/challenger adjudication (the work that needs the model)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plinth.registry.types import MANIFEST_FILE, dataset_id

if TYPE_CHECKING:
    from plinth.config import Settings
    from plinth.registry.gates import Gate
    from plinth.registry.predictor import Predictor
    from plinth.registry.service import RegistryService
    from plinth.registry.types import Decision, HistoryEntry, ModelVersion, Signature, Stage
    from plinth.tracking.service import TrackingService


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
        from plinth.errors import InvalidArgument, PlinthError
        from plinth.registry.types import Decision
        from plinth.registry.types import Stage as Stages

        if direction not in ("max", "min"):
            raise InvalidArgument(f"direction must be 'max' or 'min', not {direction!r}")
        name = model or experiment
        order = "DESC" if direction == "max" else "ASC"
        ident = f"metrics.`{metric}`"
        best = self.tracking.search_runs(
            f"{ident} is not null and status = 'FINISHED'", [f"{ident} {order}"], [experiment], 1
        )
        if not best.items:
            raise InvalidArgument(
                f"experiment {experiment!r} has no finished run with metric {metric!r}"
            )
        run = best.items[0]
        package = f"{run.experiment_id}/{run.id}/artifacts/{artifact_path}"
        champion = self._production_or_none(name)
        if holdout is not None:
            challenger_score = self._score_package(package, run.id, metric, holdout, trust_pickle)
            champion_score = (
                self._score(champion.uri, metric, holdout, trust_pickle) if champion else None
            )
        else:
            challenger_score = run.metrics[metric].last
            champion_score = champion.lineage.get("metrics", {}).get(metric) if champion else None
        better = champion_score is None or (
            challenger_score > champion_score
            if direction == "max"
            else challenger_score < champion_score
        )
        version, outcome = None, "kept"
        reason = f"run {run.name} {metric}={challenger_score:.6g} vs champion " + (
            f"v{champion.version} {champion_score:.6g}"
            if champion and champion_score is not None
            else "none"
        )
        if better:
            mv = self.registry.create_model_version(name, package, run.id)
            version = mv.version
            evidence = {}
            if holdout is not None and champion is not None:
                evidence = {
                    "holdout": {
                        "metric": metric,
                        "candidate": challenger_score,
                        "production": champion_score,
                        "production_version": champion.version,
                    }
                }
            try:
                self.registry.set_stage(
                    name,
                    mv.version,
                    Stages.PRODUCTION,
                    f"champion/challenger: {reason}",
                    False,
                    evidence,
                )
                outcome = "promoted"
            except PlinthError as exc:
                reason += f"; registered as v{mv.version} but not promoted: {exc}"
        decision = Decision(
            outcome,
            name,
            metric,
            direction,
            run.id,
            challenger_score,
            champion.version if champion else None,
            champion_score,
            version,
            reason,
        )
        self.registry.record_decision(name, decision)
        return decision

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


def _copy(source: IO[bytes], out: IO[bytes], close: bool = True) -> None:
    try:
        while block := source.read(1024 * 1024):
            out.write(block)
    finally:
        if close:
            out.close()

"""Logged models: a model's files logged to an experiment (MLflow 3's ``LoggedModel``),
apart from any run's artifacts and before any registration.

A logged model lives in an experiment, may name the run that produced it, and keeps its
files under ``{experiment_id}/models/{model_id}/artifacts`` in the artifact store. Its
params are written once; its tags change freely; deleting it hides it (its files stay).
Every method checks the caller's level on the model's experiment (write to change it or
its files, read to see them).
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, select, update

from plinth.auth.access import Access, access_for, by_experiment, guarded
from plinth.auth.types import Action, Kind
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.store.artifacts import ArtifactStore, safe_relpath
from plinth.store.engine import Store
from plinth.store.schema import experiments, logged_models, model_versions, runs
from plinth.store.sql import check_max_results, decode_page_token, encode_page_token, now_ms
from plinth.tracking.types import ArtifactEntry, Page, check_tags, validate_key

MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
MAX_MODEL_RESULTS = 1000
MAX_SEARCH_EXPERIMENTS = 1000  # experiments one search names (each is looked up)


class LoggedModelStatus(enum.Enum):
    PENDING = "LOGGED_MODEL_PENDING"
    READY = "LOGGED_MODEL_READY"
    UPLOAD_FAILED = "LOGGED_MODEL_UPLOAD_FAILED"


@dataclass(frozen=True)
class LoggedModel:
    id: str
    experiment_id: str
    name: str
    model_type: str
    source_run_id: str | None
    status: LoggedModelStatus
    status_message: str
    artifact_path: str  # relative to the artifact root
    owner: str
    created_at: int  # ms since the epoch
    updated_at: int
    params: dict[str, str]
    tags: dict[str, str]


def artifact_path_of(experiment_id: str, model_id: str) -> str:
    return f"{experiment_id}/models/{model_id}/artifacts"


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
        raise InvalidArgument(
            f"logged model id {str(model_id)[:60]!r} is not valid: it is 'm-' and 32 hex digits"
        )
    return model_id


def model_experiment(store: Store, model_id: str) -> str | None:
    """The experiment of a live (not deleted) logged model; None when there is none (no
    permission is checked: the caller checks it, or tells apart nothing more than this)."""
    if not MODEL_ID.fullmatch(str(model_id)):
        return None
    with store.read() as conn:
        found: str | None = conn.execute(
            select(logged_models.c.experiment_id).where(
                logged_models.c.id == model_id, logged_models.c.deleted_at.is_(None)
            )
        ).scalar()
    return found


def _on_model(action: Action) -> Callable[[Access, dict[str, Any]], None]:
    def check(access: Access, arguments: dict[str, Any]) -> None:
        model_id = str(arguments["model_id"])
        experiment_id = model_experiment(access.store, model_id)
        if experiment_id is None:
            return  # the method says it does not exist
        try:
            access.require(action, Kind.EXPERIMENT, experiment_id, repr(experiment_id))
        except NotFound:  # a model in an experiment the caller may not see is not there
            raise NotFound(f"logged model {model_id!r} does not exist") from None

    check.__doc__ = f"{action.value.name.lower()} on the logged model's experiment"
    return check


def check_experiment_count(experiment_ids: list[str]) -> None:
    if len(experiment_ids) > MAX_SEARCH_EXPERIMENTS:
        raise InvalidArgument(
            f"experiment_ids names {len(experiment_ids):,} experiments; a search takes at "
            f"most {MAX_SEARCH_EXPERIMENTS:,}"
        )


def _may_search(access: Access, arguments: dict[str, Any]) -> None:
    """read on each experiment searched"""
    refs = [str(e) for e in arguments["experiment_ids"] or []]
    check_experiment_count(refs)
    visible = access.visible(Kind.EXPERIMENT)  # one statement, whatever the count
    with access.store.read() as conn:
        found = _experiment_ids(conn, refs)
    for ref in refs:
        key = found.get(ref)
        if key is not None and (visible is None or key in visible):
            continue
        # the words of one that is not there, whether missing or hidden
        raise NotFound(f"experiment {ref!r} does not exist")


def _experiment_ids(conn: Connection, refs: list[str]) -> dict[str, str]:
    """The id of each experiment named by name or id (a name before an id, as the access
    rules read one), in one statement."""
    if not refs:
        return {}
    rows = conn.execute(
        select(experiments.c.id, experiments.c.name).where(
            experiments.c.name.in_(refs) | experiments.c.id.in_(refs)
        )
    ).all()
    by_id = {str(r.id): str(r.id) for r in rows}
    by_name = {str(r.name): str(r.id) for r in rows}
    return {**by_id, **by_name}


class LoggedModelService:
    def __init__(self, store: Store, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- the model -----------------------------------------------------------------------

    @guarded(Action.WRITE, Kind.EXPERIMENT, "experiment_id", resolve=by_experiment)
    def create(
        self,
        experiment_id: str,
        name: str | None = None,
        model_type: str = "",
        source_run_id: str | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> LoggedModel:
        """A new logged model, PENDING until its files are uploaded (``finalize``)."""
        name = name or f"model-{uuid.uuid4().hex[:8]}"
        validate_key(name, "logged model name")
        if model_type:
            validate_key(model_type, "model type")
        check_tags(tags)
        check_tags(params, "param")
        model_id = f"m-{uuid.uuid4().hex}"
        at = now_ms()
        if source_run_id:  # one the caller may not read is "not there", as a missing one
            self.access.require_run(Action.READ, source_run_id)
        with self.store.write() as conn:
            experiment = self._live_experiment(conn, experiment_id)
            if source_run_id:
                self._check_run(conn, source_run_id, experiment)
            row = {
                "id": model_id,
                "experiment_id": experiment,
                "source_run_id": source_run_id or None,
                "name": name,
                "model_type": model_type or "",
                "status": LoggedModelStatus.PENDING.value,
                "status_message": "",
                "artifact_path": artifact_path_of(experiment, model_id),
                "owner": self.access.actor(),
                "created_at": at,
                "updated_at": at,
                "params": json.dumps(params or {}, sort_keys=True),
                "tags": json.dumps(tags or {}, sort_keys=True),
            }
            conn.execute(logged_models.insert(), [row])
        return _model(row)

    def _live_experiment(self, conn: Connection, experiment: str) -> str:
        row = conn.execute(
            select(experiments.c.id, experiments.c.deleted_at).where(
                (experiments.c.id == experiment) | (experiments.c.name == experiment)
            )
        ).first()
        if row is None:
            raise NotFound(f"experiment {experiment!r} does not exist")
        if row.deleted_at is not None:
            raise Conflict(f"experiment {experiment!r} is deleted; restore it first")
        return str(row.id)

    def _check_run(self, conn: Connection, run_id: str, experiment_id: str) -> None:
        found = conn.execute(select(runs.c.experiment_id).where(runs.c.id == run_id)).scalar()
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if found != experiment_id:
            raise InvalidArgument(
                f"run {run_id!r} belongs to another experiment than {experiment_id!r}: "
                "a logged model's source run is in the model's experiment"
            )

    @guarded(check=_on_model(Action.READ))
    def get(self, model_id: str) -> LoggedModel:
        with self.store.read() as conn:
            return self._row(conn, model_id)

    def _row(self, conn: Connection, model_id: str, *, lock: bool = False) -> LoggedModel:
        check_model_id(model_id)
        query = select(logged_models).where(
            logged_models.c.id == model_id, logged_models.c.deleted_at.is_(None)
        )
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(f"logged model {model_id!r} does not exist")
        return _model(row._asdict())

    @guarded(check=_on_model(Action.WRITE))
    def finalize(self, model_id: str, status: LoggedModelStatus | str) -> LoggedModel:
        """Mark the model's upload READY (its files are all there) or UPLOAD_FAILED."""
        final = (LoggedModelStatus.READY, LoggedModelStatus.UPLOAD_FAILED)
        chosen = next((s for s in final if status in (s, s.value)), None)
        if chosen is None:
            shown = status.value if isinstance(status, LoggedModelStatus) else status
            raise InvalidArgument(
                f"a logged model is finalized as {final[0].value} or {final[1].value}, "
                f"not {shown!r}"
            )
        return self._change(model_id, status=chosen.value)

    @guarded(check=_on_model(Action.WRITE))
    def delete(self, model_id: str) -> None:
        """Hide the model (its files stay where they are)."""
        with self.store.write() as conn:
            self._row(conn, model_id, lock=True)
            at = now_ms()
            conn.execute(
                update(logged_models)
                .where(logged_models.c.id == model_id)
                .values(deleted_at=at, updated_at=at)
            )

    @guarded(check=_on_model(Action.WRITE))
    def set_tags(self, model_id: str, tags: dict[str, str]) -> LoggedModel:
        check_tags(tags)
        return self._change(model_id, tags=tags)

    @guarded(check=_on_model(Action.WRITE))
    def delete_tag(self, model_id: str, key: str) -> None:
        with self.store.write() as conn:
            model = self._row(conn, model_id, lock=True)
            if key not in model.tags:
                raise NotFound(f"logged model {model_id} has no tag {key!r}")
            left = {k: v for k, v in model.tags.items() if k != key}
            conn.execute(
                update(logged_models)
                .where(logged_models.c.id == model_id)
                .values(tags=json.dumps(left, sort_keys=True), updated_at=now_ms())
            )

    @guarded(check=_on_model(Action.WRITE))
    def log_params(self, model_id: str, params: dict[str, str]) -> None:
        """Params are written once: the same value again is fine, another is a Conflict."""
        check_tags(params, "param")
        self._change(model_id, params=params)

    def _change(
        self,
        model_id: str,
        status: str | None = None,
        tags: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> LoggedModel:
        with self.store.write() as conn:
            model = self._row(conn, model_id, lock=True)
            values: dict[str, Any] = {"updated_at": now_ms()}
            if status is not None:
                values["status"] = status
            if tags is not None:
                values["tags"] = json.dumps({**model.tags, **tags}, sort_keys=True)
            if params is not None:
                for key, value in params.items():
                    old = model.params.get(key)
                    if old is not None and old != value:
                        raise Conflict(
                            f"param {key!r} of logged model {model_id} is already {old!r}; "
                            f"params are immutable, cannot set it to {value!r}"
                        )
                values["params"] = json.dumps({**model.params, **params}, sort_keys=True)
            conn.execute(
                update(logged_models).where(logged_models.c.id == model_id).values(**values)
            )
            return self._row(conn, model_id)

    # -- search --------------------------------------------------------------------------

    @guarded(check=_may_search)
    def search(
        self,
        experiment_ids: list[str],
        filter: str | None = None,
        order_by: list[tuple[str, bool]] | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[LoggedModel]:
        """The live logged models of the experiments (each readable by the caller) that
        match ``filter`` (AND-joined comparisons on name, model_type, status,
        source_run_id, model_id, creation_timestamp, last_updated_timestamp, params.KEY,
        tags.KEY), ordered by ``order_by`` (field, ascending) pairs, newest first by
        default."""
        if not experiment_ids:
            raise InvalidArgument("give the experiment_ids to search logged models in")
        check_experiment_count(experiment_ids)
        offset = decode_page_token(page_token)
        limit = check_max_results(min(max_results, MAX_MODEL_RESULTS))
        conditions = parse_filter(filter)
        order = order_by or [("creation_timestamp", False)]
        for field, _ in order:
            _sort_field(field)
        with self.store.read() as conn:
            keys = _experiment_ids(conn, experiment_ids)
            missing = next((e for e in experiment_ids if e not in keys), None)
            if missing is not None:
                raise NotFound(f"experiment {missing!r} does not exist")
            ids = sorted(set(keys.values()))
            rows = conn.execute(
                select(logged_models).where(
                    logged_models.c.experiment_id.in_(ids), logged_models.c.deleted_at.is_(None)
                )
            ).all()
        found = [m for m in (_model(r._asdict()) for r in rows) if _matches(m, conditions)]
        found.sort(key=lambda m: m.id)
        for field, ascending in reversed(order):  # stable sorts: the first field decides
            found.sort(key=_sort_field(field), reverse=not ascending)
        page = found[offset : offset + limit]
        more = len(found) > offset + limit
        return Page(page, encode_page_token(offset + limit) if more else None)

    # -- runs' outputs -------------------------------------------------------------------

    def log_outputs(self, run_id: str, model_ids: list[str]) -> None:
        """Record logged models as outputs of a run (write on the run's experiment): a
        model without a source run takes this one; a model of another run is refused."""
        self.access.require_run(Action.WRITE, run_id)
        self._hide_unreadable(model_ids)
        with self.store.write() as conn:
            experiment_id = conn.execute(
                select(runs.c.experiment_id).where(runs.c.id == run_id)
            ).scalar()
            if experiment_id is None:
                raise NotFound(f"run {run_id!r} does not exist")
            for model_id in model_ids:
                model = self._row(conn, model_id, lock=True)
                if model.experiment_id != experiment_id:
                    raise InvalidArgument(
                        f"logged model {model_id} belongs to another experiment than run {run_id}"
                    )
                if model.source_run_id not in (None, run_id):
                    raise InvalidArgument(
                        f"logged model {model_id} is already the output of run "
                        f"{model.source_run_id}; Plinth keeps one source run per logged model"
                    )
                conn.execute(
                    update(logged_models)
                    .where(logged_models.c.id == model_id)
                    .values(source_run_id=run_id, updated_at=now_ms())
                )

    def _hide_unreadable(self, model_ids: list[str]) -> None:
        """A model in an experiment the caller may not read is "not there", in the words
        ``_row`` uses for a missing one (one statement for the caller's experiments)."""
        visible = self.access.visible(Kind.EXPERIMENT)
        if visible is None or not model_ids:
            return
        with self.store.read() as conn:
            rows = conn.execute(
                select(logged_models.c.id, logged_models.c.experiment_id).where(
                    logged_models.c.id.in_(model_ids)
                )
            ).all()
        for row in rows:
            if row.experiment_id not in visible:
                raise NotFound(f"logged model {row.id!r} does not exist")

    # -- files ---------------------------------------------------------------------------

    @guarded(check=_on_model(Action.READ))
    def location(self, model_id: str) -> tuple[str, str]:
        """The model's experiment id and the folder of its files under the artifact root."""
        model = self.get(model_id)
        return model.experiment_id, model.artifact_path

    @guarded(check=_on_model(Action.WRITE))
    def open_writer(self, model_id: str, path: str) -> IO[bytes]:
        """Write one of the model's files (atomic: it appears only when the write
        completes; a model deleted meanwhile takes none)."""
        full = f"{self.get(model_id).artifact_path}/{safe_relpath(path)}"

        def check() -> None:
            if model_experiment(self.store, model_id) is None:
                raise NotFound(f"logged model {model_id!r} does not exist")

        return self.artifacts.open_write(full, check)

    @guarded(check=_on_model(Action.READ))
    def open_reader(self, model_id: str, path: str) -> IO[bytes]:
        return self.artifacts.open_read(f"{self.get(model_id).artifact_path}/{safe_relpath(path)}")

    @guarded(check=_on_model(Action.READ))
    def list_files(self, model_id: str, path: str = "") -> list[ArtifactEntry]:
        base = self.get(model_id).artifact_path
        prefix = f"{base}/{safe_relpath(path, allow_root=True)}".rstrip("/")
        return [
            ArtifactEntry(info.path[len(base) + 1 :], info.is_dir, info.size)
            for info in self.artifacts.list(prefix)
        ]

    @guarded(check=_on_model(Action.WRITE))
    def delete_files(self, model_id: str, path: str) -> None:
        """Delete a file or folder of the model's files."""
        self.artifacts.delete(f"{self.get(model_id).artifact_path}/{safe_relpath(path)}")


def delete_run_artifacts(store: Store, artifacts: ArtifactStore, run_id: str, path: str) -> None:
    """Delete a run's artifact file or folder (write on its experiment); never one that
    holds, or is inside, a folder a model version was registered from."""
    access = access_for(store)
    access.require_run(Action.WRITE, run_id)
    with store.read() as conn:
        run = conn.execute(
            select(runs.c.experiment_id, runs.c.deleted_at).where(runs.c.id == run_id)
        ).first()
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        if run.deleted_at is not None:
            raise Conflict(f"run {run_id} is deleted; restore it first")
        experiment_id = run.experiment_id
        full = f"{experiment_id}/{run_id}/artifacts/{safe_relpath(path)}"
        parts = full.split("/")
        above = ["/".join(parts[:i]) for i in range(3, len(parts) + 1)]
        registered = conn.execute(
            select(model_versions.c.model_name, model_versions.c.version)
            .where(
                model_versions.c.run_id == run_id,
                model_versions.c.package_uri.in_(above)
                | model_versions.c.package_uri.startswith(f"{full}/", autoescape=True),
            )
            .order_by(model_versions.c.model_name, model_versions.c.version)
            .limit(1)
        ).first()
    if registered is not None:
        raise Conflict(
            f"artifact {path!r} of run {run_id} holds files of model version "
            f"models:/{registered.model_name}/{registered.version}: a registered version's "
            "files are read-only"
        )
    artifacts.delete(full)


def _model(row: dict[str, Any]) -> LoggedModel:
    return LoggedModel(
        id=row["id"],
        experiment_id=row["experiment_id"],
        name=row["name"],
        model_type=row["model_type"] or "",
        source_run_id=row["source_run_id"],
        status=LoggedModelStatus(row["status"]),
        status_message=row["status_message"] or "",
        artifact_path=row["artifact_path"],
        owner=row["owner"] or "",
        created_at=int(row["created_at"]),
        updated_at=int(row["updated_at"]),
        params=json.loads(row["params"] or "{}"),
        tags=json.loads(row["tags"] or "{}"),
    )


# -- search filters: AND-joined comparisons of a field with a quoted string or a number --

_FIELD = r"(?:(?:params|tags|attributes)\.)?(?:`[^`]+`|\"[^\"]+\"|[A-Za-z_][\w.\-]*)"
_CLAUSE = re.compile(
    rf"\s*(?P<field>{_FIELD})\s*(?P<op>!=|<=|>=|=|<|>|(?i:ilike|like))\s*"
    r"(?P<value>'(?:[^']|'')*'|\"[^\"]*\"|-?\d+(?:\.\d+)?)\s*"
)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_FILTER_STATUS = {
    LoggedModelStatus.PENDING: "PENDING",
    LoggedModelStatus.READY: "READY",
    LoggedModelStatus.UPLOAD_FAILED: "FAILED",
}
_STRING_FIELDS: dict[str, Callable[[LoggedModel], str | None]] = {
    "name": lambda m: m.name,
    "model_type": lambda m: m.model_type,
    "status": lambda m: _FILTER_STATUS[m.status],  # READY, as MLflow's filters say
    "source_run_id": lambda m: m.source_run_id,
    "model_id": lambda m: m.id,
}
_NUMBER_FIELDS: dict[str, Callable[[LoggedModel], int]] = {
    "creation_timestamp": lambda m: m.created_at,
    "creation_time": lambda m: m.created_at,
    "last_updated_timestamp": lambda m: m.updated_at,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
_Condition = Callable[[LoggedModel], bool]


def _clauses(text: str) -> list[str]:
    """``text`` split at the ANDs outside quotes."""
    parts, start, quote = [], 0, ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif (found := _AND.match(text, i)) is not None and (i == 0 or text[i].isspace()):
            parts.append(text[start:i])
            start = found.end()
    parts.append(text[start:])
    return parts


def parse_filter(text: str | None) -> list[_Condition]:
    if not text or not text.strip():
        return []
    conditions = []
    for clause in _clauses(text):
        found = _CLAUSE.fullmatch(clause)
        if found is None:
            raise InvalidArgument(
                f"logged model filter: cannot read {clause.strip()!r}; write comparisons such "
                "as name = 'churn' AND tags.team = 'growth', joined by AND"
            )
        conditions.append(_condition(found["field"], found["op"].upper(), found["value"]))
    return conditions


def _condition(field: str, op: str, literal: str) -> _Condition:
    value: str | float
    if literal[0] in "'\"":
        value = literal[1:-1].replace("''", "'") if literal[0] == "'" else literal[1:-1]
    else:
        value = float(literal)
    prefix, _, name = field.partition(".") if "." in field else ("attributes", "", field)
    if prefix not in ("params", "tags", "attributes"):
        prefix, name = "attributes", field
    name = name.strip('`"')
    if prefix == "attributes" and name in _NUMBER_FIELDS:
        if isinstance(value, str) or op not in _COMPARE:
            raise InvalidArgument(
                f"logged model filter: compare {name} with a number, not {literal}"
            )
        number, getter = value, _NUMBER_FIELDS[name]
        return lambda m: _COMPARE[op](getter(m), number)
    if prefix == "attributes" and name not in _STRING_FIELDS:
        known = sorted({*_STRING_FIELDS, *_NUMBER_FIELDS})
        raise InvalidArgument(
            f"logged model filter: unknown field {field!r}; use one of {known}, params.KEY or "
            "tags.KEY (Plinth's logged models carry no metrics)"
        )
    if not isinstance(value, str) or op not in ("=", "!=", "LIKE", "ILIKE"):
        raise InvalidArgument(
            f"logged model filter: {field} is text: compare it with =, !=, LIKE or ILIKE "
            f"and a quoted string, not {op} {literal}"
        )
    text_getter: Callable[[LoggedModel], str | None]
    if prefix == "params":
        text_getter = lambda m: m.params.get(name)  # noqa: E731
    elif prefix == "tags":
        text_getter = lambda m: m.tags.get(name)  # noqa: E731
    else:
        text_getter = _STRING_FIELDS[name]
    if op in ("LIKE", "ILIKE"):
        pattern = re.compile(
            "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value),
            re.IGNORECASE | re.DOTALL if op == "ILIKE" else re.DOTALL,
        )
        return lambda m: (found := text_getter(m)) is not None and bool(pattern.fullmatch(found))
    if op == "=":
        return lambda m: text_getter(m) == value
    return lambda m: (found := text_getter(m)) is not None and found != value


def _matches(model: LoggedModel, conditions: list[_Condition]) -> bool:
    return all(condition(model) for condition in conditions)


def _sort_field(field: str) -> Callable[[LoggedModel], Any]:
    name = field.removeprefix("attributes.")
    if name in _NUMBER_FIELDS:
        return _NUMBER_FIELDS[name]
    if name in _STRING_FIELDS:
        getter = _STRING_FIELDS[name]
        return lambda m: getter(m) or ""
    raise InvalidArgument(
        f"logged models are ordered by {sorted({*_STRING_FIELDS, *_NUMBER_FIELDS})}, not {field!r}"
    )

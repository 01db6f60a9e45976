"""Experiments: the modelling tasks that hold runs."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, true, update

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, by_experiment, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, WriteConflict
from plinth.store.engine import Store
from plinth.store.schema import experiment_tags, experiments, metric_summaries, params, runs
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    opt_datetime,
    to_datetime,
    upsert,
)
from plinth.tracking.types import VIEWS, Experiment, Page, RunKeys, check_tags, validate_key

_validate_name = validate_key
_LOOKS_LIKE_ID = re.compile(r"[0-9a-fA-F]{32}")
MAX_KEY_SAMPLE = 10_000


def in_view(deleted_at: ColumnElement[Any], view: str) -> ColumnElement[bool]:
    """The rows of a listing's ``view``: "active" (not deleted), "deleted" or "all"."""
    if view not in VIEWS:
        raise InvalidArgument(f"view must be one of {', '.join(VIEWS)}; got {view!r}")
    if view == "active":
        return deleted_at.is_(None)
    return deleted_at.is_not(None) if view == "deleted" else true()


class ExperimentService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- experiments -------------------------------------------------------------------

    @property
    def access(self) -> Access:
        return access_for(self.store)

    @endpoint("POST", "/experiments")
    @guarded(role=Role.EDITOR)
    def create_experiment(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> Experiment:
        """A new experiment, owned by its creator."""
        _validate_name(name, "experiment name")
        with self.store.write() as conn:
            self._name_must_be_free(conn, name)
            experiment_id = self._insert_experiment(conn, name, description)
            self._set_experiment_tags(conn, experiment_id, tags or {})
        return self._experiment(experiment_id)

    @endpoint("GET", "/experiments/{experiment:path}")
    @guarded(Action.READ, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def get_experiment(self, experiment: str) -> Experiment:
        """An experiment by id or by name."""
        return self._experiment(experiment)

    def _experiment(self, experiment: str) -> Experiment:
        with self.store.read() as conn:
            # by name first, as its access rule reads it (an id matches only what no name does)
            row = (
                conn.execute(select(experiments).where(experiments.c.name == experiment)).first()
                or conn.execute(select(experiments).where(experiments.c.id == experiment)).first()
            )
            if row is None:
                raise NotFound(f"experiment {experiment!r} does not exist")
            tags = dict(
                conn.execute(
                    select(experiment_tags.c.key, experiment_tags.c.value).where(
                        experiment_tags.c.experiment_id == row.id
                    )
                ).all()
            )
        return Experiment(
            row.id,
            row.name,
            row.description,
            row.owner,
            to_datetime(row.created_at),
            tags,
            opt_datetime(row.deleted_at),
        )

    @endpoint("GET", "/experiments")
    @guarded()
    def list_experiments(
        self,
        name_like: str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
        view: str = "active",
    ) -> Page[Experiment]:
        """The experiments the caller may see, by name: the ``view`` "active" (not
        deleted), "deleted" or "all"."""
        offset = decode_page_token(page_token)
        limit = check_max_results(max_results)
        query = (
            select(experiments.c.id)
            .where(in_view(experiments.c.deleted_at, view))
            .order_by(experiments.c.name)
        )
        if name_like:
            query = query.where(experiments.c.name.like(name_like))
        visible = self.access.visible(Kind.EXPERIMENT)
        if visible is not None:
            query = query.where(experiments.c.id.in_(visible))
        with self.store.read() as conn:
            ids = conn.execute(query.offset(offset).limit(limit + 1)).scalars().all()
        items = [self._experiment(i) for i in ids[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(ids) > limit else None)

    @guarded(Action.READ, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def list_run_keys(self, experiment: str, newest: int = 250) -> RunKeys:
        """The metric names and params (``group.name``) of the ``newest`` runs of an
        experiment: the columns a runs table offers. A bounded sample, read along the
        start-time index and the runs' primary keys: every run of a 10,000-run experiment
        would cost ~250 ms on SQLite, these ~5 ms."""
        if not 1 <= newest <= MAX_KEY_SAMPLE:
            raise InvalidArgument(f"newest must be 1 to {MAX_KEY_SAMPLE}, got {newest}")
        experiment_id = self._experiment(experiment).id
        sample = (
            select(runs.c.id)
            .where(runs.c.experiment_id == experiment_id, runs.c.deleted_at.is_(None))
            .order_by(runs.c.start_time.desc())
            .limit(newest)
        )
        ms, p = metric_summaries.c, params.c
        with self.store.read() as conn:
            # The ids as a list, not a subquery: PostgreSQL then probes the primary keys
            # for them, where it would hash a whole table against the subquery.
            ids = list(conn.execute(sample).scalars())
            metric_names = conn.execute(
                select(ms.key).where(ms.run_id.in_(ids)).distinct().order_by(ms.key)
            ).scalars()
            param_names = conn.execute(
                select(p.group, p.key).where(p.run_id.in_(ids)).distinct().order_by(p.group, p.key)
            ).all()
            return RunKeys(list(metric_names), [f"{g}.{k}" for g, k in param_names])

    @endpoint("POST", "/experiments/{experiment:path}/tags")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def set_experiment_tags(self, experiment: str, tags: dict[str, str]) -> None:
        experiment_id = self._active_experiment(experiment).id
        with self.store.write() as conn:
            self._set_experiment_tags(conn, experiment_id, tags)

    @endpoint("DELETE", "/experiments/{experiment:path}/tags")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def delete_experiment_tag(self, experiment: str, key: str) -> None:
        experiment_id = self._active_experiment(experiment).id
        with self.store.write() as conn:
            deleted = conn.execute(
                delete(experiment_tags).where(
                    experiment_tags.c.experiment_id == experiment_id, experiment_tags.c.key == key
                )
            )
            if deleted.rowcount == 0:
                raise NotFound(f"experiment {experiment!r} has no tag {key!r}")

    # -- lifecycle -----------------------------------------------------------------------

    @endpoint("POST", "/experiments/{experiment:path}/delete")
    @guarded(Action.MANAGE, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def delete_experiment(self, experiment: str) -> None:
        """Delete an experiment and its runs, softly: they leave every listing, keep their
        data and come back with ``restore_experiment``. Deleting it again changes nothing."""
        experiment_id = self._experiment(experiment).id
        with self.store.write() as conn:
            # after any run of it deleted on its own, which its restore must leave deleted
            latest = conn.execute(
                select(func.max(runs.c.deleted_at)).where(runs.c.experiment_id == experiment_id)
            ).scalar()
            now = max(now_ms(), (latest or 0) + 1)
            # the experiment's row first: a run started meanwhile takes its number from
            # that row, so it either precedes this (and is deleted with the rest) or sees
            # the experiment deleted
            marked = conn.execute(
                update(experiments)
                .where(experiments.c.id == experiment_id, experiments.c.deleted_at.is_(None))
                .values(deleted_at=now)
            )
            if marked.rowcount == 0:
                return
            # the same instant as the experiment's: what restore_experiment brings back
            taken = conn.execute(
                update(runs)
                .where(runs.c.experiment_id == experiment_id, runs.c.deleted_at.is_(None))
                .values(deleted_at=now)
            ).rowcount
            self.access.record(
                "experiment_deleted",
                f"experiment:{experiment_id}",
                detail=f"{taken} run(s)",
                conn=conn,
            )

    @endpoint("POST", "/experiments/{experiment:path}/restore")
    @guarded(Action.MANAGE, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def restore_experiment(self, experiment: str) -> None:
        """Bring back a deleted experiment with the runs its deletion took (runs deleted
        on their own before it stay deleted)."""
        found = self._experiment(experiment)
        if found.deleted_at is None:
            return
        with self.store.write() as conn:
            deleted_at = conn.execute(
                select(experiments.c.deleted_at)
                .where(experiments.c.id == found.id)
                .with_for_update()
            ).scalar()
            if deleted_at is None:  # restored meanwhile
                return
            conn.execute(
                update(runs)
                .where(runs.c.experiment_id == found.id, runs.c.deleted_at == deleted_at)
                .values(deleted_at=None)
            )
            conn.execute(
                update(experiments).where(experiments.c.id == found.id).values(deleted_at=None)
            )
            self.access.record("experiment_restored", f"experiment:{found.id}", conn=conn)

    @endpoint("POST", "/experiments/{experiment:path}/rename")
    @guarded(Action.WRITE, Kind.EXPERIMENT, "experiment", resolve=by_experiment)
    def rename_experiment(self, experiment: str, new_name: str) -> Experiment:
        """Give an experiment another name (its id stays). A deleted experiment may be
        renamed too: that frees its name for a new one."""
        _validate_name(new_name, "experiment name")
        _name_must_not_read_as_an_id(new_name)
        found = self._experiment(experiment)
        if found.name != new_name:
            try:
                with self.store.write() as conn:
                    self._name_must_be_free(conn, new_name)
                    conn.execute(
                        update(experiments)
                        .where(experiments.c.id == found.id)
                        .values(name=new_name)
                    )
                    self.access.record(
                        "experiment_renamed",
                        f"experiment:{found.id}",
                        detail=f"{found.name} -> {new_name}",
                        conn=conn,
                    )
            except WriteConflict:  # another experiment took the name meanwhile
                raise AlreadyExists(f"experiment {new_name!r} already exists") from None
            # decisions remembered by the old name must not answer for the new one
            self.access.forget_decisions()
        return self._experiment(found.id)

    def _active_experiment(self, experiment: str) -> Experiment:
        found = self._experiment(experiment)
        if found.deleted_at is not None:
            raise Conflict(f"experiment {found.name!r} is deleted; restore it first")
        return found

    def _name_must_be_free(self, conn: Connection, name: str) -> None:
        taken = conn.execute(
            select(experiments.c.deleted_at).where(experiments.c.name == name)
        ).first()
        if taken is None:
            return
        if taken.deleted_at is not None:
            raise AlreadyExists(
                f"experiment {name!r} already exists (deleted): restore it, or rename it to "
                "free the name"
            )
        raise AlreadyExists(f"experiment {name!r} already exists")

    def _insert_experiment(self, conn: Connection, name: str, description: str) -> str:
        """Insert an experiment owned by the caller (who must hold the editor role)."""
        self.access.require_role(Role.EDITOR, f"create experiment {name!r}")
        _name_must_not_read_as_an_id(name)
        experiment_id = uuid.uuid4().hex
        conn.execute(
            insert(experiments).values(
                id=experiment_id,
                name=name,
                description=description,
                owner=self.access.actor(),
                created_at=now_ms(),
                next_run_number=1,
            )
        )
        self.access.on_created(conn, Kind.EXPERIMENT, experiment_id)
        return experiment_id

    def _set_experiment_tags(
        self, conn: Connection, experiment_id: str, tags: dict[str, str]
    ) -> None:
        check_tags(tags)
        rows = [{"experiment_id": experiment_id, "key": k, "value": v} for k, v in tags.items()]
        upsert(
            conn, experiment_tags, rows, ["experiment_id", "key"], {"value": lambda ex: ex.value}
        )


def _name_must_not_read_as_an_id(name: str) -> None:
    if _LOOKS_LIKE_ID.fullmatch(name):
        # an experiment is asked for by name or id: a name that reads as another's id
        # would answer for it
        raise InvalidArgument(
            f"experiment name {name!r} reads as an experiment id (32 hex digits): "
            "choose another name"
        )

"""Experiments: the modelling tasks that hold runs."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import Connection, insert, select

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, by_experiment, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import AlreadyExists, InvalidArgument, NotFound
from plinth.store.engine import Store
from plinth.store.schema import experiment_tags, experiments, metric_summaries, params, runs
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    to_datetime,
    upsert,
)
from plinth.tracking.types import Experiment, Page, RunKeys, check_tags, validate_key

_validate_name = validate_key
_LOOKS_LIKE_ID = re.compile(r"[0-9a-fA-F]{32}")
MAX_KEY_SAMPLE = 10_000


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
            if conn.execute(select(experiments.c.id).where(experiments.c.name == name)).first():
                raise AlreadyExists(f"experiment {name!r} already exists")
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
            row.id, row.name, row.description, row.owner, to_datetime(row.created_at), tags
        )

    @endpoint("GET", "/experiments")
    @guarded()
    def list_experiments(
        self, name_like: str | None = None, max_results: int = 1000, page_token: str | None = None
    ) -> Page[Experiment]:
        """The experiments the caller may see, by name."""
        offset = decode_page_token(page_token)
        limit = check_max_results(max_results)
        query = select(experiments.c.id).order_by(experiments.c.name)
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
            .where(runs.c.experiment_id == experiment_id)
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
        experiment_id = self._experiment(experiment).id
        with self.store.write() as conn:
            self._set_experiment_tags(conn, experiment_id, tags)

    def _insert_experiment(self, conn: Connection, name: str, description: str) -> str:
        """Insert an experiment owned by the caller (who must hold the editor role)."""
        self.access.require_role(Role.EDITOR, f"create experiment {name!r}")
        if _LOOKS_LIKE_ID.fullmatch(name):
            # an experiment is asked for by name or id: a name that reads as another's id
            # would answer for it
            raise InvalidArgument(
                f"experiment name {name!r} reads as an experiment id (32 hex digits): "
                "choose another name"
            )
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

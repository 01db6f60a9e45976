"""Batch scoring: a model version over a Parquet file or folder or a Delta table, appended
to a score history Delta table as ONE commit per job, exactly once.

The input streams in chunks (bounded memory): each chunk is enriched with the model's
features as they were at each row's timestamp (when the model was trained from a feature
view and the input holds entity keys rather than the model's inputs), scored in-process or
on Spark, checked (``plinth.serving.checks``) and streamed into the commit. The checks are
judged after the last chunk, before the commit: a refusal aborts it, so nothing is visible.

Exactly once: the commit carries the job key twice, as a Delta application transaction
(``txn`` action, app id ``plinth.score.<key>``: kept in the table's state and checked by
Delta's conflict detection, so two runs of one job cannot both commit) and in the commit
metadata (``plinth.job_key``, for people reading the history). A job whose key the table
already holds is reported as delivered and not scored again; one killed before its commit
left nothing visible and simply runs again. The default key hashes the model version, the
input's identity (files' paths, sizes and modification times, or a Delta table's
version), the output and the options that change what is written. A new table is first
created empty (its own commit, version 0), because Delta checks transactions only against
a table that exists when the write starts.

Rows written: the key columns (``keys``; else the view's entity keys; else, for a plain
model, the input's columns that are join keys of a feature store entity; else ``row``, the
input row number, as also when the output table already numbers its rows), the input's timestamp column when it has one, ``scored_at`` (one time
per job), ``score``, ``proba_<class>`` (with ``probabilities``), ``model_name``,
``model_version`` and ``job_key``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from plinth.errors import InvalidArgument, NotFound, PlinthError
from plinth.faults import crash_point
from plinth.features.duck import cores
from plinth.serving.checks import (
    CheckResult,
    ChecksFailed,
    ScoreChecks,
    Thresholds,
    blocked_message,
    training_profile,
)
from plinth.serving.delivery import KEY, Concurrent, ScoreTable, as_micros, constant_columns
from plinth.serving.sources import Source, open_source
from plinth.serving.sqlout import SqlScores
from plinth.stats.profile import TableProfile, profile

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import Client
    from plinth.registry.predictor import Predictor
    from plinth.serving.jobs import ScoreJob, ScoreJobService
    from plinth.serving.model import ServedModel

log = logging.getLogger("plinth.serving")

CHUNK_ROWS = 100_000
ENGINES = ("duckdb", "spark")
ROW = "row"
_OUTPUT = ("scored_at", "score", "model_name", "model_version", "job_key")
_ROW_ID = "__plinth_row"
_THREAD_SAFE = {"sklearn", "xgboost", "lightgbm", "pytorch"}  # predict from many threads
_TIME = pa.timestamp("us", "UTC")
Progress = Callable[[int, "int | None"], None]  # rows scored so far, rows in all


@dataclass(frozen=True)
class ScoreOptions:
    engine: str = "duckdb"
    timestamp_column: str = "event_timestamp"
    keys: tuple[str, ...] = ()
    allow_failed_checks: bool = False
    chunk_rows: int = CHUNK_ROWS
    probabilities: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    # chunks scored at once; 0: one per CPU for the flavors whose predict is thread-safe
    # (scikit-learn, XGBoost, LightGBM, PyTorch), one for pyfunc models, which may not be;
    # the Spark engine: one
    threads: int = 0
    sql_uri: str | None = None  # also copy each job's rows to this database's
    sql_table: str | None = None  # table (plinth.serving.sqlout)
    trust_pickle: bool = False  # load a pickled package (runs the registrant's code)

    def __post_init__(self) -> None:
        if (self.sql_uri is None) != (self.sql_table is None):
            raise InvalidArgument("a SQL copy of the scores needs both a SQL URI and a table")
        if self.engine not in ENGINES:
            raise InvalidArgument(f"engine must be one of {list(ENGINES)}, not {self.engine!r}")
        if self.chunk_rows < 1:
            raise InvalidArgument(f"chunk_rows must be at least 1, not {self.chunk_rows}")
        if self.threads < 0:
            raise InvalidArgument(f"threads must be 0 (one per CPU) or more, not {self.threads}")

    def workers(self, flavor: str) -> int:
        if self.engine == "spark":
            return 1  # Spark spreads each chunk over its own executors
        return self.threads or (cores() if flavor in _THREAD_SAFE else 1)


@dataclass(frozen=True)
class ScoreResult:
    job_key: str
    job_id: int | None  # the score_jobs row (None: delivered by a run recorded elsewhere)
    model_name: str
    model_version: int
    input: str
    output: str
    status: str  # DELIVERED (a blocked job raises ChecksFailed)
    rows: int
    output_version: int | None  # the Delta version holding the scores (None: no rows)
    checks: list[CheckResult]
    already_delivered: bool = False  # an earlier run of this job delivered it
    sql_rows: int = 0  # rows this run copied to the SQL table

    @property
    def checks_passed(self) -> bool:
        return all(c.passed for c in self.checks)


def score(
    client: Client,
    model_uri: str,
    input: str,
    output: str,
    *,
    engine: str = "duckdb",
    timestamp_column: str = "event_timestamp",
    keys: list[str] | tuple[str, ...] = (),
    job_key: str | None = None,
    allow_failed_checks: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    probabilities: bool = False,
    thresholds: Thresholds | None = None,
    threads: int = 0,
    sql_uri: str | None = None,
    sql_table: str | None = None,
    progress: Progress | None = None,
    trust_pickle: bool = False,
) -> ScoreResult:
    """Score ``input`` (a Parquet file or folder, or a Delta table) with ``model_uri``
    (``models:/churn@production``, ``models:/churn/3``) into the Delta table ``output``.
    Failed checks raise ``ChecksFailed`` and deliver nothing, unless allowed. ``threads``
    chunks are read, enriched and predicted at once (0: one per CPU); results are checked
    and written in input order whatever finishes first. With ``sql_uri`` and
    ``sql_table`` the job's rows are also copied, once, to that SQL table. A pickled model
    package is refused unless ``trust_pickle`` or the store's policy allows it."""
    from plinth.serving.model import load_served

    options = ScoreOptions(
        engine,
        timestamp_column,
        tuple(keys),
        allow_failed_checks,
        chunk_rows,
        probabilities,
        thresholds or Thresholds(),
        threads,
        sql_uri,
        sql_table,
        trust_pickle,
    )
    served = load_served(client, model_uri, trust_pickle=trust_pickle)
    source = open_source(input)
    scorer = Scorer(client, served, output, options)
    key = job_key if job_key is not None else scorer.default_key(source)
    return scorer.run(source, key, {}, progress)


# -- the job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    enrich: bool
    keys: list[str]  # key columns copied from the input (empty: a row number)
    timestamp: str | None  # the input's timestamp column, copied too


_Scored = tuple["pd.DataFrame", pa.Array, dict[str, pa.Array]]  # model input, scores, probas


class _Blocked(Exception):
    """Raised inside the stream so deltalake aborts the commit."""


class Scorer:
    """One model version scoring into one table; ``run`` does one job."""

    def __init__(self, client: Client, served: ServedModel, output: str, options: ScoreOptions):
        self.client = client
        self.served = served
        self.options = options
        if client.remote:
            _check_shared_output(output)
        self.table = ScoreTable(output)
        self.sql = (
            None
            if options.sql_uri is None or options.sql_table is None
            else SqlScores(options.sql_uri, options.sql_table)
        )
        self.jobs = client.score_jobs
        self.profile = training_profile(client, served)
        self.what = f"model {served.name} v{served.version.version}"
        if options.engine == "spark":
            # Spark's Python workers run "python3" from PATH unless told; in local mode they
            # need this interpreter, the one with Plinth and the model's libraries (read
            # when the session starts, so before enrichment or scoring starts one)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    def default_key(self, source: Source) -> str:
        o = self.options
        parts = [self.served.name, self.served.version.version, source.identity, self.table.uri]
        parts += [list(o.keys), o.timestamp_column, o.probabilities]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]

    def run(
        self,
        source: Source,
        job_key: str,
        metadata: dict[str, Any],
        progress: Progress | None = None,
    ) -> ScoreResult:
        if not job_key or len(job_key) > 128:
            raise InvalidArgument(f"a job key must have 1 to 128 characters, not {job_key!r}")
        plan = self._plan(source)
        done = self.table.delivered(job_key)
        if done is not None:
            return self._already(source, job_key, *done)
        version = self.served.version
        job_id = self.jobs.start_score_job(
            job_key, version.model_name, version.version, self._recorded(source), self.table.uri,
            socket.gethostname(), os.getpid(),
        ).id  # fmt: skip
        checks = ScoreChecks(self.profile, self.options.thresholds, self._classifier())
        inputs = InputProfile()
        metadata = {KEY: job_key, "plinth.model": f"{version.model_name}/{version.version}",
                    "plinth.input": source.name, **metadata}  # fmt: skip
        stream = self._stream(source, plan, job_key, checks, inputs, progress)
        try:
            written = self.table.append(stream, job_key, metadata)
        except _Blocked:
            results = checks.results()
            self.jobs.finish_score_job(job_key, "BLOCKED", checks.rows, results)
            failed = [r for r in results if not r.passed]
            message = blocked_message(f"scores of {self.what} for {source.name}", failed)
            raise ChecksFailed(message, results, job_key) from None
        except Concurrent:  # another run of this job committed first
            return self._already(source, job_key, *(self.table.delivered(job_key) or (None, None)))
        except BaseException:
            self.jobs.finish_score_job(job_key, "FAILED", checks.rows)
            raise
        crash_point("score-commit")
        results = checks.results()
        self.jobs.finish_score_job(job_key, "DELIVERED", checks.rows, results, written)
        result = self._result(source, job_key, job_id, checks.rows, written, results)
        return replace(result, sql_rows=self._copy_to_sql(job_key, written))

    def _recorded(self, source: Source) -> str:
        """The input as a remote server records it: a path on this machine's disk as
        ``file://HOST/path``, so no one takes it for a path on the server."""
        from plinth.store.locations import shared

        name = source.name
        if not self.client.remote or shared(name) or not os.path.isabs(name):
            return name
        return f"file://{socket.gethostname()}{name}"

    def _copy_to_sql(self, job_key: str, version: int | None) -> int:
        """Copy the job's rows of Delta ``version`` to the SQL table, unless copied."""
        if self.sql is None or version is None or self.sql.copied(job_key):
            return 0
        import pyarrow.compute as pc

        from plinth.serving.sources import delta_table

        dataset = delta_table(self.table.uri, version).to_pyarrow_dataset()
        batches = dataset.to_batches(filter=pc.field("job_key") == job_key)
        return self.sql.copy(job_key, dataset.schema, iter(batches))

    def _plan(self, source: Source) -> _Plan:
        served, columns, ts = self.served, source.columns, self.options.timestamp_column
        view = served.view
        enrich = served.needs_enrichment(columns)
        provided = set(columns)
        if enrich and view is not None:
            needed = [*view.keys, ts, *(r.name for r in view.request)]
            missing = [c for c in needed if c not in columns]
            if missing:
                raise InvalidArgument(
                    f"input {source.name} has no column {missing[0]!r}: {self.what} reads "
                    f"feature view {view.ref}, so each row needs its entity keys {view.keys}, "
                    f"the timestamp column {ts!r} (see --timestamp-column) and request values"
                )
            provided |= set(view.output_names)
        missing = [n for n in served.input_names if n not in provided]
        if missing:
            raise InvalidArgument(
                f"input {source.name} has no column {missing[0]!r}, which {self.what} needs"
            )
        keys = list(self.options.keys)
        if not keys and view is not None and all(k in columns for k in view.keys):
            keys = list(view.keys)
        if not keys and view is None:
            keys = self._entity_columns(columns)
        unknown = [k for k in keys if k not in columns]
        if unknown:
            raise InvalidArgument(f"key column {unknown[0]!r} is not in input {source.name}")
        clash = [k for k in [*keys, ts] if k in (*_OUTPUT, ROW) or k.startswith("proba_")]
        if clash:
            raise InvalidArgument(
                f"input column {clash[0]!r} would clash with a column of the scores"
            )
        return _Plan(enrich, keys, ts if ts in columns and ts not in keys else None)

    def _entity_columns(self, columns: list[str]) -> list[str]:
        """The keys a plain model's scores keep without ``keys``: the input's columns that
        are join keys of the feature store's entities. None (a row number instead) when
        there are none, or when the output table numbers its rows already."""
        existing = self.table.columns()
        if existing is not None and ROW in existing:
            return []
        known = {k for entity in self.client.features.list_entities() for k in entity.join_keys}
        return [c for c in columns if c in known]

    def _classifier(self) -> bool:
        return callable(getattr(self.served.predictor.native, "predict_proba", None))

    def _stream(
        self,
        source: Source,
        plan: _Plan,
        job_key: str,
        checks: ScoreChecks,
        inputs: InputProfile,
        progress: Progress | None,
    ) -> Iterator[pa.Table]:
        total = source.count_rows() if progress is not None else None
        scored_at = datetime.now(UTC)
        version = self.served.version
        tags = {
            "model_name": version.model_name,
            "model_version": version.version,
            "job_key": job_key,
        }
        done = 0
        for chunk, (frame, scores, probas) in self._scored(source, plan):
            checks.update(frame, scores, list(probas.values()))
            inputs.update(frame, scores)
            n = chunk.num_rows
            columns: dict[str, Any] = {k: chunk[k] for k in plan.keys}
            if not plan.keys:
                columns[ROW] = pa.array(np.arange(done, done + n), pa.int64())
            if plan.timestamp is not None:
                columns[plan.timestamp] = chunk[plan.timestamp]
            columns = {name: as_micros(values) for name, values in columns.items()}
            columns["scored_at"] = pa.repeat(pa.scalar(scored_at, _TIME), n)
            yield pa.table({**columns, "score": scores, **probas, **constant_columns(tags, n)})
            done += chunk.num_rows
            if progress is not None:
                progress(done, total)
        # kept before the commit: a run killed after it leaves them to the reconcile; the
        # profile too (of a refused job as well: worth a look), so a job is never seen
        # DELIVERED before its drift monitors could check it
        self.jobs.record_score_checks(job_key, checks.rows, checks.results())
        inputs.save(self.jobs, job_key)
        crash_point("score-stream")
        if not self.options.allow_failed_checks and not all(r.passed for r in checks.results()):
            raise _Blocked()

    def _scored(self, source: Source, plan: _Plan) -> Iterator[tuple[pa.Table, _Scored]]:
        """Each chunk with its scores, in input order, ``workers`` chunks scored at a time
        on threads (the models scikit-learn, XGBoost, LightGBM and PyTorch ship predict
        without Python's lock held, so threads use every CPU), while this thread reads the
        next chunks and checks and hands on the scored ones. At most twice ``workers``
        chunks are held, so memory stays bounded."""
        workers = self.options.workers(self.served.predictor.manifest.flavor)
        chunks = source.chunks(self.options.chunk_rows)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="plinth-score")
        pending: deque[tuple[pa.Table, Future[_Scored]]] = deque()
        try:
            offset = 0
            for chunk in chunks:
                scored = pool.submit(self._score_chunk, source, plan, chunk, offset)
                pending.append((chunk, scored))
                offset += chunk.num_rows
                if len(pending) >= 2 * workers:
                    chunk, scored = pending.popleft()
                    yield chunk, scored.result()
            while pending:
                chunk, scored = pending.popleft()
                yield chunk, scored.result()
        finally:  # a failure or an abandoned stream: start nothing more
            pool.shutdown(wait=True, cancel_futures=True)

    def _score_chunk(self, source: Source, plan: _Plan, chunk: pa.Table, offset: int) -> _Scored:
        from plinth.serving.model import enrich_offline, model_frame

        served, options = self.served, self.options
        where = f"rows {offset}..{offset + chunk.num_rows - 1} of input {source.name}"
        try:
            table = chunk
            if plan.enrich and served.view is not None:
                store = self.client.feature_store()
                if options.engine == "spark":
                    job = store.get_historical_features(
                        chunk,
                        served.view,
                        timestamp_column=options.timestamp_column,
                        engine="spark",
                    )
                    table = job.to_arrow()
                else:
                    table = enrich_offline(store, served.view, chunk, options.timestamp_column)
            frame = model_frame(served, table.to_pandas())
            if options.engine == "spark":
                master = self.client.settings.spark_master
                scores, probas = _predict_spark(
                    served.predictor, frame, options.probabilities, master
                )
            else:
                scores, probas = predict(served.predictor, frame, options.probabilities)
        except InvalidArgument as e:
            raise InvalidArgument(f"{where}: {e.message}") from e
        except PlinthError:
            raise
        except Exception as e:  # the model's own code failed: the caller's error, not ours
            raise InvalidArgument(f"{self.what} failed on {where}: {type(e).__name__}: {e}") from e
        return frame, scores, probas

    def _already(
        self, source: Source, job_key: str, version: int | None, rows: int | None
    ) -> ScoreResult:
        try:
            job: ScoreJob | None = self.jobs.get_score_job(job_key)
        except NotFound:  # delivered by a run recorded in another store
            job = None
        if job is not None and job.status != "DELIVERED":  # a run killed after its commit
            self.jobs.finish_score_job(job_key, "DELIVERED", rows, output_version=version)
        checks = [] if job is None else job.checks
        job_id = None if job is None else job.id
        result = self._result(source, job_key, job_id, rows or 0, version, checks, already=True)
        # a run killed between the commit and the SQL copy left the copy to this one
        return replace(result, sql_rows=self._copy_to_sql(job_key, version))

    def _result(
        self, source: Source, job_key: str, job_id: int | None, rows: int, version: int | None,
        checks: list[CheckResult], already: bool = False,
    ) -> ScoreResult:  # fmt: skip
        mv = self.served.version
        return ScoreResult(
            job_key, job_id, mv.model_name, mv.version, source.name, self.table.uri,
            "DELIVERED", rows, version, checks, already,
        )  # fmt: skip


class InputProfile:
    """The profile (``plinth.stats.profile``) of a job's model inputs and scores (as
    ``prediction``), merged chunk by chunk and stored with the job after its last chunk,
    before its commit, for input drift monitoring. Profiling never fails the job: a chunk
    it cannot profile leaves the job without a profile, logged."""

    def __init__(self) -> None:
        self.profile: TableProfile | None = None
        self.failed = False

    def update(self, frame: pd.DataFrame, scores: pa.Array) -> None:
        if self.failed:
            return
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.append_column("prediction", scores)
            found = profile(table)
            self.profile = found if self.profile is None else self.profile.merge(found)
        except Exception as e:  # a profile is a by-product: the scores still go out
            self.failed = True
            log.warning("score job: the inputs could not be profiled: %s", e)

    def save(self, jobs: ScoreJobService, job_key: str) -> None:
        if self.profile is None or self.failed:
            return
        try:
            jobs.record_score_profile(job_key, self.profile.to_dict())
        except Exception as e:  # delivered all the same; only monitoring lacks the profile
            log.warning("score job %s: its input profile was not stored: %s", job_key, e)


def _check_shared_output(output: str) -> None:
    """A job run by a client of a remote server is recorded on that server: its scores go
    to a table every party can reach, never to a path on the client's own disk."""
    from plinth.store.locations import shared

    if not shared(output):
        raise InvalidArgument(
            f"score table {output!r} is on this machine's disk, but the job is recorded on a "
            "remote Plinth server where no one else can read it: give a table every party "
            "can reach (e.g. s3://bucket/scores/churn), or run plinth score on the server"
        )


# -- prediction ------------------------------------------------------------------------


def predict(
    predictor: Predictor, frame: pd.DataFrame, probabilities: bool
) -> tuple[pa.Array, dict[str, pa.Array]]:
    """One score per row, and ``proba_<class>`` columns when asked for."""
    scores = _one_column(predictor.predict(frame), len(frame))
    probas: dict[str, pa.Array] = {}
    if probabilities:
        matrix = np.asarray(predictor.predict_proba(frame), dtype=float).reshape(len(frame), -1)
        classes = getattr(predictor.native, "classes_", range(matrix.shape[1]))
        for i, name in enumerate(classes):
            probas[f"proba_{name}"] = pa.array(matrix[:, i], pa.float64())
    return scores, probas


def _one_column(result: Any, rows: int) -> pa.Array:
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        if result.shape[1] != 1:
            raise InvalidArgument(f"the model returned {result.shape[1]} columns; a score is one")
        result = result.iloc[:, 0]
    if isinstance(result, pd.Series):
        array = pa.Array.from_pandas(result)
    else:
        values = np.asarray(result)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise InvalidArgument(
                f"the model returned shape {values.shape}; a score is one value per row"
            )
        array = pa.array(values)
    if len(array) != rows:
        raise InvalidArgument(f"the model returned {len(array)} scores for {rows} rows")
    return array


def _predict_spark(
    predictor: Predictor, frame: pd.DataFrame, probabilities: bool, master: str
) -> tuple[pa.Array, dict[str, pa.Array]]:
    """``predict`` on Spark: the rows are partitioned, each partition scored by a Python
    worker holding the predictor (``mapInArrow``), and put back in order."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from plinth.features.spark import spark_session

    spark = spark_session(master)
    probe, probe_probas = predict(predictor, frame.head(1), probabilities)
    schema = pa.schema(
        [(_ROW_ID, pa.int64()), ("score", probe.type)] + [(n, pa.float64()) for n in probe_probas]
    )
    rows = pa.Table.from_pandas(frame, preserve_index=False)
    rows = rows.append_column(_ROW_ID, pa.array(np.arange(len(frame)), pa.int64()))
    score_partition = partial(_score_partition, predictor, probabilities, schema)
    with warnings.catch_warnings():
        # PySpark 4 warns on pandas 3 whenever a UDF is made, also for this Arrow-only one
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        mapped = spark.createDataFrame(rows).mapInArrow(score_partition, from_arrow_schema(schema))
    scored = mapped.toArrow().sort_by(_ROW_ID)
    probas = {n: scored[n].combine_chunks() for n in probe_probas}
    return scored["score"].combine_chunks().cast(probe.type), probas


def _score_partition(
    predictor: Predictor, probabilities: bool, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows == 0:  # an empty partition: nothing to predict
            continue
        frame = batch.to_pandas()
        ids = frame.pop(_ROW_ID)
        scores, probas = predict(predictor, frame, probabilities)
        arrays = [pa.array(ids, pa.int64()), scores, *probas.values()]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)

"""The central store's tables (SQLAlchemy Core). Alembic migrations mirror this file.

Times are integer milliseconds since the epoch: portable, sortable, cheap to write.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(32)
NAME = String(500)
# On SQLite only INTEGER PRIMARY KEY aliases the rowid (fast appends); BIGINT would not.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")

experiments = Table(
    "experiments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", NAME, nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("next_run_number", Integer, nullable=False, default=1),
    Column("deleted_at", BigInteger),  # soft deletion (MLflow's lifecycle stage "deleted")
)

experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column("experiment_id", ID, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
    Column("key", NAME, primary_key=True),
    Column("value", Text, nullable=False),
)

environments = Table(
    "environments",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("python_version", String(100), nullable=False),
    Column("platform", String(200), nullable=False),
    Column("packages", Text, nullable=False),  # JSON object name -> version
)

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("experiment_id", ID, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("name", NAME, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("owner", NAME, nullable=False, default=""),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("heartbeat_at", BigInteger, nullable=False),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean),
    Column("git_remote", Text),
    Column("entry_point", Text),
    Column("host", String(255)),
    Column("seed", BigInteger),
    Column("environment_digest", String(64), ForeignKey("environments.digest")),
    Column("deleted_at", BigInteger),  # soft deletion (MLflow's lifecycle stage "deleted")
    UniqueConstraint("experiment_id", "name"),
    UniqueConstraint("experiment_id", "number"),
    Index(None, "status", "heartbeat_at"),
    Index(None, "start_time"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("group", String(100), primary_key=True),
    Column("key", NAME, primary_key=True),
    Column("value_type", String(10), nullable=False),  # int | float | str | bool | json
    Column("value", Text, nullable=False),  # canonical JSON of the value
    Column("value_num", Float),  # for numeric filters and ordering
    Column("value_str", Text),  # for string filters and ordering
    Index(None, "key", "value_num"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", NAME, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("value", Float),  # NULL stores NaN (SQLite cannot keep NaN)
    Column("timestamp", BigInteger, nullable=False),
    Column("is_best", Boolean, nullable=False),
    Index(None, "run_id", "key", "step"),
)

metric_summaries = Table(
    "metric_summaries",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", NAME, primary_key=True),
    Column("goal", String(3), nullable=False),  # max | min
    Column("count", BigInteger, nullable=False),
    Column("last", Float),
    Column("last_step", BigInteger, nullable=False),
    Column("last_timestamp", BigInteger, nullable=False),
    Column("min", Float),
    Column("max", Float),
    Column("best", Float),
    Column("best_step", BigInteger),
    Index(None, "key", "last"),
)

# How far each writer's local spool of metric points has been written (see
# tracking/spool.py): a batch replayed or retried after a crash is written once.
metric_spools = Table(
    "metric_spools",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("spool", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # points of the spool written so far
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", NAME, primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", NAME, primary_key=True),
    Column("uri", Text, nullable=False),
    Column("digest", String(128)),
    Column("version", String(100)),
    Column("rows", BigInteger),
    Column("logged_at", BigInteger, nullable=False),
    Column("context", NAME),  # what the run used it for: training, eval...
    Column("source_type", NAME),  # as a client names it (MLflow's dataset source type)
    Column("schema", Text),  # as a client sent it (MLflow: JSON text)
    Column("profile", Text),
)

# -- registry -------------------------------------------------------------------------------

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("tags", Text, nullable=False, default="{}"),  # JSON object
    Column("gates", Text, nullable=False, default="[]"),  # JSON list of gate specs
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("next_version", Integer, nullable=False, default=1),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column(
        "model_name",
        NAME,
        ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("run_id", ID, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("package_uri", Text, nullable=False),  # path under the artifact root
    Column("flavor", String(100), nullable=False),
    Column("manifest", Text, nullable=False),  # JSON, immutable
    # the sha256 of the package's manifest file as registered (NULL: registered before 0010)
    Column("manifest_sha256", String(64)),
    Column("lineage", Text, nullable=False, default="{}"),  # JSON, immutable
    Column("tags", Text, nullable=False, default="{}"),  # JSON object, mutable
    Index(None, "stage"),
    Index(None, "run_id"),
    # At most one PRODUCTION version per model, enforced by the database itself.
    Index(
        "uq_model_versions_one_production",
        "model_name",
        unique=True,
        sqlite_where=Column("stage") == "PRODUCTION",
        postgresql_where=Column("stage") == "PRODUCTION",
    ),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column(
        "model_name",
        NAME,
        ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
)

model_history = Table(
    "model_history",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("model_name", NAME, nullable=False),
    Column("version", Integer),
    Column("action", String(20), nullable=False),
    Column("actor", NAME, nullable=False, default=""),
    Column("at", BigInteger, nullable=False),
    Column("from_value", Text),
    Column("to_value", Text),
    Column("reason", Text, nullable=False, default=""),
    Column("details", Text, nullable=False, default="{}"),  # JSON: gate results, scores ...
    Index(None, "model_name", "id"),
)

# -- feature store ---------------------------------------------------------------------------

entities = Table(
    "entities",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("join_keys", Text, nullable=False),  # JSON list
    Column("value_type", String(20), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
)

feature_groups = Table(
    "feature_groups",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("entity", NAME, ForeignKey("entities.name"), nullable=False),
    Column("keys", Text, nullable=False),  # JSON list
    Column("event_time", NAME, nullable=False),
    Column("features", Text, nullable=False),  # JSON list of FeatureSpec
    Column("online", Boolean, nullable=False, default=False),
    Column("ttl_seconds", BigInteger),
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("table_uri", Text, nullable=False),
    Column("expectations", Text, nullable=False, default="[]"),  # JSON list of Expectation
    Column("validation_mode", String(10), nullable=False, default="strict"),
    Column("materialized_until", BigInteger),  # ms; for materialize_incremental
    # JSON: what each insert is compared with for drift (``plinth.features.drift``)
    Column("drift_reference", Text),
)

feature_commits = Table(
    "feature_commits",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("group_name", NAME, nullable=False),
    Column("group_version", Integer, nullable=False),
    Column("commit_version", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("operation", String(20), nullable=False),
    Column("written_by", NAME, nullable=False, default=""),
    Column("at", BigInteger, nullable=False),
    Column("validation_passed", Boolean, nullable=False),
    Column("statistics", Text, nullable=False, default="[]"),  # JSON list of ColumnStatistics
    Column("drift", Text),  # JSON: the insert's drift verdict against its reference
    Index(None, "group_name", "group_version", "commit_version"),
)

validation_reports = Table(
    "validation_reports",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("group_name", NAME, nullable=False),
    Column("group_version", Integer, nullable=False),
    Column("commit_version", BigInteger),  # None when the write was refused
    Column("mode", String(10), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("results", Text, nullable=False),  # JSON list of ExpectationResult
    Column("at", BigInteger, nullable=False),
    Index(None, "group_name", "group_version", "id"),
)

feature_views = Table(
    "feature_views",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("features", Text, nullable=False),  # JSON list of "group:vN:feature"
    Column("keys", Text, nullable=False),  # JSON list
    Column("label", NAME),
    Column("request", Text, nullable=False, default="[]"),  # JSON list of FeatureSpec
    Column("transformations", Text, nullable=False, default="[]"),  # JSON list
    Column("description", Text, nullable=False, default=""),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
)

# Which group versions each view version reads: "where used" is a join.
feature_view_groups = Table(
    "feature_view_groups",
    metadata,
    Column("view_name", NAME, primary_key=True),
    Column("view_version", Integer, primary_key=True),
    Column("group_name", NAME, primary_key=True),
    Column("group_version", Integer, primary_key=True),
    Column("features", Text, nullable=False),  # JSON list of the group's features read
    Index(None, "group_name", "group_version"),
)

training_datasets = Table(
    "training_datasets",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("view_name", NAME, nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Column("entity_uri", Text, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("group_commits", Text, nullable=False),  # JSON {"group:vN": delta version}
    Column("timestamp_column", NAME, nullable=False),
    Column("label", NAME),
    Column("description", Text, nullable=False, default=""),
    Column("created_by", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "view_name", "view_version"),
)

# Which training datasets each model version was trained on.
model_version_datasets = Table(
    "model_version_datasets",
    metadata,
    Column("model_name", NAME, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("training_dataset", BigInteger, primary_key=True),
    ForeignKeyConstraint(
        ["model_name", "model_version"],
        ["model_versions.model_name", "model_versions.version"],
        ondelete="CASCADE",
    ),
    Index(None, "training_dataset"),
)

# -- serving -------------------------------------------------------------------------------

# Every prediction a model service made (written in batches, off the request path).
predictions = Table(
    "predictions",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("model_name", NAME, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    # one row per request: JSON {column: [value per row]} of the features as the model used
    # them, and [output per row]
    Column("inputs", Text, nullable=False),
    Column("outputs", Text, nullable=False),
    Column("rows", Integer, nullable=False, server_default="1"),
    Column("latency_ms", Float, nullable=False),
    Index(None, "model_name", "model_version", "at"),
    Index(None, "request_id"),
)

# One batch scoring job (or one scored file of a followed folder): its checks and outcome.
score_jobs = Table(
    "score_jobs",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("job_key", String(128), nullable=False, unique=True),  # idempotence key
    Column("model_name", NAME, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("input", Text, nullable=False),
    Column("output", Text, nullable=False),
    Column("status", String(20), nullable=False),  # RUNNING, DELIVERED, BLOCKED, FAILED
    Column("rows", BigInteger),
    Column("checks", Text, nullable=False, default="[]"),  # JSON list of check results
    Column("output_version", BigInteger),  # the Delta version that delivered the scores
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("host", String(255)),  # where the run of a RUNNING job is, to tell it died
    Column("pid", Integer),
    Column("started_by", NAME, nullable=False, default="", server_default=""),
    Index(None, "model_name", "model_version"),
)

# -- users, tokens, permissions -------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("kind", String(20), nullable=False),  # user | service
    Column("role", String(20), nullable=False),  # admin | editor | viewer
    Column("email", NAME),
    Column("password_hash", Text),  # argon2id; NULL: no password sign-in
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", NAME, nullable=False, default=""),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column(
        "group_name", NAME, ForeignKey("user_groups.name", ondelete="CASCADE"), primary_key=True
    ),
    Column("user_name", NAME, ForeignKey("users.name", ondelete="CASCADE"), primary_key=True),
    Index(None, "user_name"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_name", NAME, ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("label", NAME, nullable=False, default=""),
    Column("secret_hash", String(64), nullable=False, unique=True),  # sha256 of the secret
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("revoked_at", BigInteger),
    Column("last_used_at", BigInteger),
    Index(None, "user_name"),
)

# A grant of a level (viewer 1, editor 2, promoter 3, owner 4) on one resource to a user, a
# group, or everyone (grantee_type "everyone", grantee "*").
grants = Table(
    "grants",
    metadata,
    Column("kind", String(30), primary_key=True),
    Column("resource", NAME, primary_key=True),
    Column("grantee_type", String(10), primary_key=True),
    Column("grantee", NAME, primary_key=True),
    Column("level", Integer, nullable=False),
    Column("granted_by", NAME, nullable=False, default=""),
    Column("granted_at", BigInteger, nullable=False),
    Index(None, "grantee_type", "grantee"),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", NAME, nullable=False, default=""),
    Column("event", String(40), nullable=False),
    Column("target", Text, nullable=False, default=""),
    Column("outcome", String(20), nullable=False),  # ok | refused
    Column("client", String(100), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index(None, "at"),
)

# -- A/B experiments --------------------------------------------------------------------------

# An experiment's design is one JSON document (``config``: the whole Experiment as last
# changed); the columns beside it are copies for filtering and listing.
abtests = Table(
    "abtests",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("owner", NAME, nullable=False, default=""),
    Column("status", String(20), nullable=False),  # draft | running | paused | stopped
    Column("mode", String(20), nullable=False),  # ab | shadow | canary | bandit
    Column("layer", NAME),
    Column("salt", String(64), nullable=False),  # never changes: a unit's arm depends on it
    Column("version", Integer, nullable=False),
    Column("config", Text, nullable=False),  # JSON
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("stopped_at", BigInteger),
    Index(None, "status"),
    Index(None, "layer"),
)

# Every change to an experiment, append-only: who, when, why, what, and the design after it.
abtest_versions = Table(
    "abtest_versions",
    metadata,
    Column("name", NAME, ForeignKey("abtests.name", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("action", String(20), nullable=False),  # create | update | start | pause | ...
    Column("changed_by", NAME, nullable=False, default=""),
    Column("changed_at", BigInteger, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("changes", Text, nullable=False, default="{}"),  # JSON: field -> "before -> after"
    Column("config", Text, nullable=False),  # JSON: the whole Experiment after the change
)

# A layer's own salt and which of its buckets each started experiment of it holds: a unit
# is in at most one experiment of a layer.
abtest_layers = Table(
    "abtest_layers",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("allocation", Text, nullable=False, default="{}"),  # JSON: experiment -> ranges
    Column("updated_at", BigInteger, nullable=False),
)

# A lease on some background work (``store/lease.py``): its holder until ``expires_at_ms``;
# an expired lease may be taken over by anyone.
leases = Table(
    "leases",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("holder", NAME, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
)

# Monitoring (``plinth.monitoring``). A profile is the statistics of a table at a place and
# time: what it describes is ``subject_kind`` (feature_commit, training_data,
# serving_window, score_job, dataset) and ``subject`` (``group/version@commit``,
# ``model/version``, a score job's key, a dataset's name), with the keys it describes in
# their own columns so that "the deciles of model m's inputs per stage" is one query.
profiles = Table(
    "profiles",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("subject_kind", String(20), nullable=False),
    Column("subject", NAME, nullable=False),
    Column("group_name", NAME),
    Column("group_version", Integer),
    Column("commit_version", BigInteger),
    Column("model_name", NAME),
    Column("model_version", Integer),
    Column("score_job_id", BigInteger),
    Column("window_start", BigInteger),  # ms; the rows' time span, when known
    Column("window_end", BigInteger),
    Column("rows", BigInteger, nullable=False),
    Column("created_by", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "subject_kind", "subject"),
    Index(None, "group_name", "group_version", "commit_version"),
    Index(None, "model_name", "model_version"),
)

# One column of a profile: the figures people query as columns, and the whole mergeable
# profile (histogram, value counts) as JSON in ``data``.
profile_columns = Table(
    "profile_columns",
    metadata,
    Column("profile_id", ROW_ID, ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
    Column("column_name", NAME, primary_key=True),
    Column("kind", String(20), nullable=False),  # numeric | categorical | temporal | other
    Column("dtype", Text, nullable=False),  # the Arrow type (a struct's is long)
    Column("count", BigInteger, nullable=False),
    Column("nulls", BigInteger, nullable=False),
    Column("distinct", BigInteger),
    Column("mean", Float),
    Column("std", Float),
    Column("min", Float),
    Column("max", Float),
    Column("deciles", Text, nullable=False, default="[]"),  # JSON: 0%, 10%, ..., 100%
    Column("data", Text, nullable=False),  # JSON: the mergeable ColumnProfile
)

# A named check evaluated on a schedule and/or on each new commit or score job.
monitors = Table(
    "monitors",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("kind", String(30), nullable=False),
    Column("target", NAME, nullable=False),  # a feature group or a registered model
    Column("config", Text, nullable=False, default="{}"),  # JSON: the MonitorSpec
    Column("schedule_seconds", Integer),  # evaluate every N seconds (None: not scheduled)
    Column("on_event", Boolean, nullable=False, default=False),  # each new commit / job
    Column("webhook_url", Text),
    Column("cooldown_seconds", Integer, nullable=False, default=3600),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("owner", NAME, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_run_at", BigInteger),
    Column("last_event", BigInteger),  # the newest commit version / score job id evaluated
    Index(None, "kind", "target"),
)

# Each evaluation of a monitor, with what it found.
monitor_evaluations = Table(
    "monitor_evaluations",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("monitor", NAME, ForeignKey("monitors.name", ondelete="CASCADE"), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # ok | breach | error | skipped
    Column("trigger", String(100), nullable=False),  # schedule | manual | commit:N | job:N
    Column("result", Text, nullable=False, default="{}"),  # JSON: the check's report
    Column("reference_profile", BigInteger),
    Column("current_profile", BigInteger),
    Index(None, "monitor", "at"),
)

# A breach of a monitor: stored, logged, POSTed to the monitor's webhook (with retries),
# at most one per ``dedup_key`` within the monitor's cooldown.
alerts = Table(
    "alerts",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("monitor", NAME, ForeignKey("monitors.name", ondelete="CASCADE"), nullable=False),
    Column("evaluation_id", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("message", Text, nullable=False),
    Column("dedup_key", NAME, nullable=False),
    Column("status", String(12), nullable=False),  # open | acknowledged
    # none | pending | sending | delivered | failed
    Column("delivery", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("rounds", Integer, nullable=False, default=0),  # delivery rounds taken
    # when a process took the alert's round (``sending``); another may take it over only
    # once that claim has expired
    Column("claimed_at", BigInteger),
    Column("last_error", Text),
    Column("acknowledged_by", NAME),
    Column("acknowledged_at", BigInteger),
    Index(None, "monitor", "at"),
    Index(None, "delivery"),
)

# Labels that arrive after the prediction: matched to a logged request (``request_id``,
# ``row`` within it) or to the newest prediction for an entity (``entity_key``: canonical
# JSON of the key columns) made before ``at``.
labels = Table(
    "labels",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("model_name", NAME, nullable=False),
    Column("request_id", String(64)),
    Column("row", Integer, nullable=False, default=0),
    Column("entity_key", Text),
    Column("label", Text, nullable=False),  # JSON value
    Column("at", BigInteger, nullable=False),  # when the outcome happened
    Column("logged_at", BigInteger, nullable=False),
    Column("logged_by", NAME, nullable=False, default=""),
    Index(None, "model_name", "request_id"),
    Index(None, "model_name", "at"),
)

# -- pipelines ------------------------------------------------------------------------------

# A pipeline the scheduler can run: importable code at ``entrypoint`` ("package.module:attr"
# or "path/to/file.py:attr"), its default params and how its runs are limited.
pipelines = Table(
    "pipelines",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("entrypoint", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("steps", Text, nullable=False, default="[]"),  # JSON: step names, in order
    Column("params", Text, nullable=False, default="{}"),  # JSON: default params
    Column("experiment", NAME, nullable=False),  # where its tracking runs go
    Column("timeout_seconds", Float),  # a run's limit (None: none)
    Column("retries", Integer, nullable=False, default=0),  # further attempts of a failed run
    Column("retry_backoff_seconds", Float, nullable=False, default=30.0),
    Column("concurrency", Integer, nullable=False, default=1),  # its runs at once
    Column("owner", NAME, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# What starts a pipeline by itself: a cron schedule, or an event (a monitor's alert, a
# feature group's commit, a model's delivered score job). ``cursor`` is how far it has
# looked: the last cron occurrence enqueued (ms), or the last alert / commit / job id seen.
pipeline_schedules = Table(
    "pipeline_schedules",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("pipeline", NAME, ForeignKey("pipelines.name", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),  # cron | alert | commit | score_job
    Column("cron", String(200)),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("target", NAME),  # a monitor | a feature group | a registered model
    Column("params", Text, nullable=False, default="{}"),  # JSON: over the pipeline's own
    Column("catchup", String(10), nullable=False, default="latest"),  # skip | latest | all
    Column("paused", Boolean, nullable=False, default=False),
    Column("cursor", BigInteger),
    Column("created_by", NAME, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "pipeline"),
)

# One attempt at running a pipeline, queued for a worker (or run in the caller's process).
# A trigger enqueues at most one run per schedule: ``(schedule_id, trigger_key)`` is unique
# (``cron:<occurrence ms>``, ``alert:<id>``, ``commit:<id>``, ``job:<id>``).
pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("pipeline", NAME, nullable=False),
    Column("run_id", String(32)),  # its tracking run, once started
    Column(
        "status", String(12), nullable=False
    ),  # queued | running | succeeded | failed | cancelled
    Column(
        "trigger", String(200), nullable=False
    ),  # manual | cron | alert | commit | score_job | rerun | retry
    Column("schedule_id", BigInteger),
    Column("trigger_key", String(200)),
    Column("scheduled_for", BigInteger),  # a cron occurrence (ms)
    Column("alert_id", BigInteger),  # the alert that triggered it (active retraining)
    Column("params", Text, nullable=False, default="{}"),  # JSON: the params it runs with
    Column("attempt", Integer, nullable=False, default=1),
    Column("max_attempts", Integer, nullable=False, default=1),
    Column("retry_of", BigInteger),  # the first attempt, on a retry
    Column("resumed_from", BigInteger),  # the run whose earlier steps' outputs it reuses
    Column("from_step", NAME),  # where it resumes
    Column("queued_at", BigInteger, nullable=False),
    Column("not_before", BigInteger, nullable=False),  # a retry waits its back-off
    Column("started_at", BigInteger),
    Column("finished_at", BigInteger),
    Column("heartbeat_at", BigInteger),
    Column("worker", String(255)),  # host:pid of the process running it
    Column("created_by", NAME, nullable=False),
    Column("error", Text),  # why it failed: a step's traceback, a timeout, a killed worker
    UniqueConstraint("schedule_id", "trigger_key"),
    Index(None, "pipeline", "id"),
    Index(None, "status", "not_before"),
    Index(None, "retry_of", "attempt"),  # the scheduler's look for a run's next attempt
)

# Each step of a run: its status, times, inputs and output (where stored), log, traceback.
pipeline_steps = Table(
    "pipeline_steps",
    metadata,
    Column(
        "pipeline_run",
        BigInteger,
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", NAME, primary_key=True),
    Column("position", Integer, nullable=False),
    Column(
        "status", String(12), nullable=False
    ),  # pending | running | succeeded | failed | skipped | cached | reused
    Column("started_at", BigInteger),
    Column("finished_at", BigInteger),
    Column("code_version", String(64)),
    Column("cache_key", String(64)),
    Column("reused_from", BigInteger),  # the pipeline run whose output it took (cache, resume)
    Column("inputs", Text, nullable=False, default="{}"),  # JSON: name -> digest / summary
    Column("output", Text),  # JSON: kind, where it is stored, digest, summary
    Column("log_path", Text),  # artifact path of its log within the tracking run
    Column("error", Text),  # traceback
    Index(None, "cache_key"),
)

# Champion/challenger decisions (the registry's; also in model_history), one per ``key``:
# a retried pipeline run decides once.
model_decisions = Table(
    "model_decisions",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("model_name", NAME, nullable=False),
    Column("key", NAME, unique=True),  # idempotence key, e.g. pipeline-run:<id>
    Column("outcome", String(12), nullable=False),  # promoted | kept | registered
    Column("metric", NAME, nullable=False),
    Column("direction", String(3), nullable=False),
    Column("challenger_run_id", String(32)),
    Column("challenger_version", Integer),
    Column("challenger_score", Float),
    Column("champion_version", Integer),
    Column("champion_score", Float),
    Column("pipeline_run", BigInteger),
    Column("alert_id", BigInteger),
    Column("reason", Text, nullable=False, default=""),
    Column("evidence", Text, nullable=False, default="{}"),  # JSON
    Column("actor", NAME, nullable=False, default=""),
    Column("at", BigInteger, nullable=False),
    Index(None, "model_name", "id"),
    Index(None, "pipeline_run"),
)


# MLflow 3's logged models (a model logged by a run, before it is registered): kept for the
# MLflow REST API; their files live under ``artifact_path`` in the artifact root.
logged_models = Table(
    "logged_models",
    metadata,
    Column("id", String(40), primary_key=True),  # "m-" + 32 hex digits
    Column("experiment_id", ID, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("source_run_id", ID, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("name", NAME, nullable=False),
    Column("model_type", NAME, nullable=False, default=""),
    Column("status", String(30), nullable=False),
    Column("status_message", Text, nullable=False, default=""),
    Column("artifact_path", Text, nullable=False),
    Column("owner", NAME, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("params", Text, nullable=False, default="{}"),  # JSON object
    Column("tags", Text, nullable=False, default="{}"),  # JSON object
    Column("deleted_at", BigInteger),
    Index(None, "experiment_id", "created_at"),
    Index(None, "source_run_id"),
)

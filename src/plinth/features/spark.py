"""The Spark engine for point-in-time retrieval: the rule, the rows and the schema of
``plinth.features.retrieval``, computed by Spark. Inputs arrive as Arrow (the retrieval
contract) and the result returns as Arrow; the join itself runs distributed.

Per request, entity rows and feature rows are stacked into one frame, partitioned by the join
keys and ordered by time (a feature row before an entity row at the same instant, so equal
timestamps are included); each entity row takes the last feature row seen so far. This is a
sort, not a range join, so a key with many events does not multiply rows.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from plinth.config import check_spark_master
from plinth.errors import InvalidArgument, PlinthError
from plinth.features.retrieval import (
    ROW_ID,
    TIME,
    TTL_TIME,
    FeatureRequest,
    JoinPlan,
    PlannedRequest,
    attach_features,
    plan_join,
    project_source,
    source_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_session(master: str = "local[*]", app_name: str = "plinth") -> SparkSession:
    """A quiet Spark session on ``master`` (``Settings.spark_master``: ``local[*]``,
    ``local[N]`` or ``spark://host:port``): UTC, no UI, a 1 GB driver; in local mode, few
    shuffle partitions.

    The first call starts it; later calls return the running session whatever they ask."""
    from pyspark.sql import SparkSession

    try:
        check_spark_master(master)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    builder = SparkSession.builder.master(master).appName(app_name)
    if master.startswith("local"):
        # Local mode needs no network address; binding to loopback also skips Spark's
        # warning about the host name resolving to one. (On a cluster, executors connect
        # back to this driver, so it must keep its routable address.)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        partitions = str(2 * _local_cores(master))
        builder = builder.config("spark.sql.shuffle.partitions", partitions).config(
            "spark.default.parallelism", partitions
        )
    # Python workers (UDFs) run this interpreter, which has plinth, not python3 from PATH;
    # a cluster's workers need the same path (the Plinth image) or their own PYSPARK_PYTHON.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        builder.config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.log.level", "ERROR")
        .getOrCreate()
    )


def local_spark(app_name: str = "plinth", cores: int = 2) -> SparkSession:
    """``spark_session`` in local mode on ``cores`` cores."""
    return spark_session(f"local[{cores}]", app_name)


def _local_cores(master: str) -> int:
    cores = master.partition("[")[2].rstrip("]").split(",")[0]  # "local" runs on one
    if cores == "*":
        return os.cpu_count() or 1
    return int(cores or 1)


def spark_point_in_time_join(
    spark: SparkSession,
    entity: pa.Table,
    requests: list[FeatureRequest],
    timestamp_column: str = "event_timestamp",
) -> pa.Table:
    """``point_in_time_join`` on Spark: same rows, same order, same schema."""
    plan = plan_join(entity, requests, timestamp_column)
    if not plan.requests:
        return plan.entity
    keys = spark.createDataFrame(plan.keys)
    columns: dict[str, pa.ChunkedArray] = {}
    for planned in plan.requests:
        joined = _as_of(keys, spark.createDataFrame(project_source(planned, plan.unit)), planned)
        result = joined.orderBy(ROW_ID).toArrow()
        _check_order(result, plan)
        columns.update({name: result.column(name) for name in result.column_names[1:]})
    return attach_features(plan, pa.table(columns))


def _as_of(keys: DataFrame, source: DataFrame, planned: PlannedRequest) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    names = source_columns(planned)
    key_names, values = names[: len(planned.entity_keys)], names[len(planned.entity_keys) + 1 :]
    # A null key or time never matches in a SQL join; drop such rows so that the window
    # (which groups nulls together) agrees with the DuckDB engine.
    present = F.col("t").isNotNull()
    for key in key_names:
        present = present & F.col(key).isNotNull()
    source = source.where(present)
    row = F.struct(F.col("t"), *(F.col(v) for v in values))
    features = source.select(
        F.lit(None).cast("long").alias(ROW_ID),
        *key_names,
        "t",
        F.lit(None).cast("long").alias("tu"),
        F.lit(0).alias("side"),
        row.alias("row"),
    )
    row_type = features.schema["row"].dataType
    entities = keys.select(
        ROW_ID,
        *(F.col(e).alias(k) for e, k in zip(planned.entity_keys, key_names, strict=True)),
        F.col(TIME).alias("t"),
        F.col(TTL_TIME).alias("tu"),
        F.lit(1).alias("side"),
        F.lit(None).cast(row_type).alias("row"),
    )
    window = (
        Window.partitionBy(*key_names)
        .orderBy(F.col("t").asc_nulls_first(), "side")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    latest = F.last("row", ignorenulls=True).over(window)
    stacked = features.unionByName(entities).withColumn("latest", latest).where(F.col("side") == 1)
    fresh = F.col("t").isNotNull() & F.col("latest").isNotNull()
    if planned.ttl is not None:
        fresh = fresh & (F.col("latest.t") >= F.col("tu") - F.lit(planned.ttl))
    outputs = [
        F.when(fresh, F.col(f"latest.{value}")).alias(f"c{planned.first_output + j}")
        for j, value in enumerate(values)
    ]
    return stacked.select(ROW_ID, *outputs)


def _check_order(result: pa.Table, plan: JoinPlan) -> None:
    # Every entity row must come back exactly once, in order: anything else is an engine bug.
    if not result.column(ROW_ID).equals(plan.keys.column(ROW_ID)):
        raise PlinthError("the Spark join lost, repeated or reordered entity rows")

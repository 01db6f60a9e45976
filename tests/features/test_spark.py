"""The Spark engine gives exactly the DuckDB engine's answer: same rows, order and types."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from plinth.client import Client
from plinth.config import load_settings
from plinth.errors import InvalidArgument
from plinth.features.retrieval import point_in_time_join
from plinth.features.spark import local_spark, spark_point_in_time_join, spark_session
from plinth.features.store import FeatureStore
from tests.features.test_retrieval import (
    CASES,
    ERRORS,
    check_case,
    random_data,
    reference_join,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("pyspark")  # the "spark" extra


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    # started as Plinth starts it, on the master its settings name (not the default local[*])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLINTH_SPARK_MASTER", "local[2]")
        session = spark_session(load_settings().spark_master, "plinth-tests")
    yield session
    session.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_made_case_on_both_engines(spark: SparkSession, name: str) -> None:
    case = CASES[name]()
    out = spark_point_in_time_join(spark, case.entity, case.requests)
    check_case(case, out)
    assert out.equals(point_in_time_join(case.entity, case.requests))


def test_random_data_on_both_engines(spark: SparkSession) -> None:
    data = random_data(seed=7)
    out = spark_point_in_time_join(spark, data.entity, data.requests)
    assert out.equals(point_in_time_join(data.entity, data.requests))
    assert out.select(list(reference_join(data))).to_pydict() == reference_join(data)


@pytest.mark.parametrize("name", ["no timestamp column", "unknown feature", "naive timestamp"])
def test_refusals_are_shared(spark: SparkSession, name: str) -> None:
    entity, requests, column, message = ERRORS[name]
    with pytest.raises(InvalidArgument, match=message):
        spark_point_in_time_join(spark, entity, requests, column)


def test_local_spark_is_reused(spark: SparkSession) -> None:
    assert local_spark() is spark
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_the_session_runs_on_the_master_the_settings_name(spark: SparkSession) -> None:
    assert spark.sparkContext.master == "local[2]"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"  # two per local core


@pytest.mark.parametrize(
    "master", ["local", "local[*]", "local[4]", "local[2,3]", "spark://spark-master:7077"]
)
def test_spark_masters_plinth_takes(master: str) -> None:
    assert load_settings(spark_master=master).spark_master == master


@pytest.mark.parametrize(
    "master", ["", "local[0]", "local[two]", "spark://no-port", "yarn", "http://spark:7077"]
)
def test_a_bad_spark_master_is_refused_naming_it(
    master: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = f"{master!r} is not a Spark master Plinth can use: give local"
    with pytest.raises(InvalidArgument, match=f"spark_master: .*{re.escape(said)}"):
        load_settings(spark_master=master)
    monkeypatch.setenv("PLINTH_SPARK_MASTER", master)
    with pytest.raises(InvalidArgument, match=re.escape(said)):
        load_settings()
    with pytest.raises(InvalidArgument, match=re.escape(said)):
        spark_session(master)  # refused before any session starts


@pytest.mark.parametrize("fs_client", ["local"], indirect=True)
def test_a_clients_feature_store_joins_on_its_settings_master(fs_client: Client) -> None:
    fs_client.settings.spark_master = "spark://spark-master:7077"
    assert fs_client.feature_store().spark_master == "spark://spark-master:7077"


@pytest.mark.parametrize("fs_client", ["local"], indirect=True)
def test_a_feature_view_on_both_engines(spark: SparkSession, fs: FeatureStore) -> None:
    from tests.features.test_views import entity_rows, populated

    view = populated(fs)
    on_spark = view.get_historical_features(entity_rows(), engine="spark").to_arrow()
    assert on_spark.equals(view.get_historical_features(entity_rows()).to_arrow())
    assert "amount_over_avg" in on_spark.column_names

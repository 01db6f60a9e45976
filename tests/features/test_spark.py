"""The Spark engine gives exactly the DuckDB engine's answer: same rows, order and types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from plinth.errors import InvalidArgument
from plinth.features.retrieval import point_in_time_join
from plinth.features.spark import local_spark, spark_point_in_time_join
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
    session = local_spark("plinth-tests")
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


@pytest.mark.parametrize("fs_client", ["local"], indirect=True)
def test_a_feature_view_on_both_engines(spark: SparkSession, fs: FeatureStore) -> None:
    from tests.features.test_views import entity_rows, populated

    view = populated(fs)
    on_spark = view.get_historical_features(entity_rows(), engine="spark").to_arrow()
    assert on_spark.equals(view.get_historical_features(entity_rows()).to_arrow())
    assert "amount_over_avg" in on_spark.column_names

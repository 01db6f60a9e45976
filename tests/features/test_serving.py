"""The feature server's answer: JSON made from the columns, as the endpoint's type gives it."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

from plinth.features.lookup import NOT_FOUND, PRESENT, OnlineResponse
from plinth.features.serving import _ONLINE, OnlineFeatures, online_json


def pydantic_json(response: OnlineResponse) -> bytes:
    return _ONLINE.dump_json(OnlineFeatures(response.rows, response.statuses))


def test_the_json_is_byte_for_byte_the_endpoint_types() -> None:
    values = {
        "at": [datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), None],
        "midnight": [datetime(2024, 5, 1, tzinfo=UTC), datetime(1960, 1, 1, tzinfo=UTC)],
        "born": [date(1, 1, 1), date(1990, 2, 3)],
        "x": [1e16, 5e-324],
        "y": [math.nan, -math.inf],
        "n": [2**63 - 1, -(2**63)],
        "s": ['Zoë "quoted" \\ \n', ""],
        "flag": [True, False],
        "nested": [{"a": [1, {"b": None}]}, []],
    }
    response = OnlineResponse(
        {"customer_id": [1, "two"], **values},
        {name: (PRESENT, NOT_FOUND) for name in values},
        2,
    )

    assert online_json(response) == pydantic_json(response)
    assert json.loads(online_json(response))["rows"][0]["y"] is None  # NaN: null, as before


def test_integers_beyond_64_bits_still_encode() -> None:
    response = OnlineResponse({"customer_id": [2**70], "x": [1.0]}, {"x": (PRESENT,)}, 1)

    assert json.loads(online_json(response))["rows"] == [{"customer_id": 2**70, "x": 1.0}]
    assert online_json(response) == pydantic_json(response)


def test_no_rows() -> None:
    assert json.loads(online_json(OnlineResponse({}, {}, 0))) == {"rows": [], "statuses": []}

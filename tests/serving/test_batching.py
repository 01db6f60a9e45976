"""Adaptive micro-batching: what queues while the model is busy is predicted together."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth.serving.batching import MicroBatcher


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_queued_during_a_call_form_the_next_batch() -> None:
    calls: list[int] = []
    release = threading.Event()

    def predict(model: Any, frame: pd.DataFrame) -> Any:
        calls.append(len(frame))
        if len(calls) == 1:
            release.wait(5)  # the first call is slow: the others queue meanwhile
        return frame["x"].to_numpy() * model

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(predict, max_rows=100)
        first = asyncio.create_task(batcher.submit(10, pd.DataFrame({"x": [1]})))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.create_task(batcher.submit(10, pd.DataFrame({"x": [i, i]})))
            for i in range(2, 6)
        ]
        await asyncio.sleep(0.05)
        release.set()
        results = [await first] + [await r for r in rest]
        await batcher.close()
        return results

    results = run(scenario())
    assert calls == [1, 8]  # alone at first, then the four queued requests in one call
    assert [r.tolist() for r in results] == [[10], [20, 20], [30, 30], [40, 40], [50, 50]]


def test_batches_do_not_mix_models_nor_exceed_max_rows() -> None:
    calls: list[tuple[Any, int]] = []
    release = threading.Event()

    def predict(model: Any, frame: pd.DataFrame) -> Any:
        calls.append((model, len(frame)))
        release.wait(5)
        return np.zeros(len(frame))

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_rows=4)
        tasks = [asyncio.create_task(batcher.submit("a", pd.DataFrame({"x": [0]})))]
        await asyncio.sleep(0.05)
        for model in ["a", "a", "b", "b", "a", "a"]:
            tasks.append(asyncio.create_task(batcher.submit(model, pd.DataFrame({"x": [0]}))))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks)
        await batcher.close()

    run(scenario())
    assert calls[0] == ("a", 1)
    assert all(rows <= 4 for _, rows in calls)
    assert sum(rows for _, rows in calls) == 7
    assert [m for m, _ in calls[1:3]] == ["a", "b"]  # one batch of 4 split by model


def test_an_error_reaches_every_request_of_the_batch() -> None:
    def predict(model: Any, frame: pd.DataFrame) -> Any:
        raise ValueError("the model broke")

    async def scenario() -> None:
        batcher = MicroBatcher(predict)
        with pytest.raises(ValueError, match="the model broke"):
            await batcher.submit(None, pd.DataFrame({"x": [1]}))
        await batcher.close()

    run(scenario())


def test_a_delay_lets_a_batch_fill() -> None:
    calls: list[int] = []

    def predict(model: Any, frame: pd.DataFrame) -> Any:
        calls.append(len(frame))
        return np.zeros(len(frame))

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_delay_ms=200, max_rows=3)
        tasks = []
        for _ in range(3):
            tasks.append(asyncio.create_task(batcher.submit(None, pd.DataFrame({"x": [0]}))))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        await batcher.close()

    run(scenario())
    assert calls == [3]  # waited (at most 200 ms) and filled up to max_rows

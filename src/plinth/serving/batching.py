"""Adaptive micro-batching: requests that arrive while the model is busy are predicted
together, in one call, when it is free again.

At low load a request is predicted at once (it never waits for company); under load the
queue fills while a batch runs and the next batch takes everything queued, up to
``max_rows``. ``max_delay_ms`` may add a bounded wait for more requests to join a batch.
Batches never mix model versions: a hot swap in between is respected per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

Predict = Callable[[Any, pd.DataFrame], Any]  # (model, frame) -> predictions


@dataclass
class _Item:
    model: Any
    frame: pd.DataFrame
    done: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    def __init__(
        self,
        predict: Predict,
        *,
        max_rows: int = 1000,
        max_delay_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_rows = max_rows
        self.max_delay = max_delay_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        # one thread: the model runs one batch at a time, which is what lets batches form
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="plinth-predict")

    async def submit(self, model: Any, frame: pd.DataFrame) -> Any:
        """The predictions for ``frame`` (as the model returns them for those rows)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(model, frame, done))
        return await done

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            rows = len(batch[0].frame)
            deadline = loop.time() + self.max_delay
            while rows < self.max_rows:
                if self._queue.empty():
                    wait = deadline - loop.time()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), wait)
                    except TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                batch.append(item)
                rows += len(item.frame)
            for model, items in _by_model(batch):
                await self._predict(loop, model, items)

    async def _predict(
        self, loop: asyncio.AbstractEventLoop, model: Any, items: list[_Item]
    ) -> None:
        frames = [i.frame for i in items]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if self.on_batch is not None:
            self.on_batch(len(frame))
        try:
            result = await loop.run_in_executor(self._executor, self.predict, model, frame)
        except Exception as e:  # each waiting request gets the error
            for item in items:
                if not item.done.done():
                    item.done.set_exception(e)
            return
        start = 0
        for item in items:
            end = start + len(item.frame)
            if not item.done.done():
                item.done.set_result(_rows(result, start, end))
            start = end


def _by_model(batch: list[_Item]) -> list[tuple[Any, list[_Item]]]:
    groups: list[tuple[Any, list[_Item]]] = []
    for item in batch:
        if groups and groups[-1][0] is item.model:
            groups[-1][1].append(item)
        else:
            groups.append((item.model, [item]))
    return groups


def _rows(result: Any, start: int, end: int) -> Any:
    if isinstance(result, pd.DataFrame | pd.Series):
        return result.iloc[start:end]
    return np.asarray(result)[start:end]

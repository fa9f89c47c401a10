"""Micro-batching: requests that arrive together share one forward pass.

The first waiting item opens a batch; the batch closes when ``max_batch`` items are in or
``max_wait`` seconds have passed since it opened, and runs on one worker thread (so the
model is never run by two threads at once and the event loop keeps accepting requests
meanwhile). A lone request waits at most ``max_wait`` longer than it would unbatched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any


class MicroBatcher:
    """``await submit(item)`` -> ``run([... item ...])``'s result for that item."""

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 8, max_wait: float = 0.005):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.batches = 0  # forward passes so far
        self.largest = 0  # the largest batch so far
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="segtrain-serve")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._thread.shutdown(wait=True)

    async def submit(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _next_batch(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self._thread, self.run, items)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request, the worker lives on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            for (_, future), result in zip(batch, results):
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(result)

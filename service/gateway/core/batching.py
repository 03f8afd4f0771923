"""Micro-batching: concurrent requests for the same model target are merged into one upstream call.

A batch is sent when it holds `max_batch_size` images, or when its first request has waited `batch_wait_timeout_s`
and fewer than `max_concurrent_batches` batches of its key are in flight: an idle gateway sends at once, a busy
one lets requests pile up while the upstream works, so batches grow with load.
Each caller gets back exactly its own rows. If the merged call fails with a bad-request error, the batch is split in
halves and retried, so only the request holding the culprit image fails. A caller that has gone away (cancelled)
before its batch leaves is not sent upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.gateway.core.metrics import GatewayMetrics
from service.gateway.errors import BackendFailed, BadRequest, DeadlineExceeded, GatewayError

logger = logging.getLogger(__name__)

Row = TypeVar("Row")
# (batch key, images, seconds left) → one result row per image, in order.
BatchPredictor = Callable[[Hashable, list[bytes], float], Awaitable[list[Row]]]


@dataclass
class _Pending(Generic[Row]):
    images: list[bytes]
    deadline: float
    enqueued_at: float
    future: asyncio.Future[list[Row]]


@dataclass
class _Queue(Generic[Row]):
    pending: list[_Pending[Row]] = field(default_factory=list)
    image_count: int = 0
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # the wait is over; leaves as soon as an in-flight slot frees


class MicroBatcher(Generic[Row]):
    """Merges concurrent `submit` calls per key into calls of `predict`."""

    def __init__(
        self,
        predict: BatchPredictor[Row],
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        metrics: GatewayMetrics,
        max_concurrent_batches: int = 2,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        self._metrics = metrics
        self._queues: dict[Hashable, _Queue[Row]] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, images: list[bytes], timeout_s: float) -> list[Row]:
        """Queue the images of one request; return their rows once their batch has been answered."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        item: _Pending[Row] = _Pending(images, now + timeout_s, now, loop.create_future())
        queue = self._queues.setdefault(key, _Queue())
        queue.pending.append(item)
        queue.image_count += len(images)
        if queue.image_count >= self.max_batch_size:
            self._flush(key)
        elif queue.timer is None and not queue.due:
            queue.timer = loop.call_later(self.batch_wait_timeout_s, self._on_wait_over, key)
        # Cancelling the caller (or its deadline) cancels this future, which marks the request as gone for _dispatch.
        try:
            return await asyncio.wait_for(item.future, timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within the request's {timeout_s:.3g} s") from None

    async def close(self) -> None:
        """Send what is queued and wait for every batch in flight."""
        for key in list(self._queues):
            self._flush(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_wait_over(self, key: Hashable) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.timer, queue.due = None, True
        if self._in_flight.get(key, 0) < self.max_concurrent_batches:
            self._flush(key)

    def _flush(self, key: Hashable) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        for batch in self._split_to_size(queue.pending):
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.get_running_loop().create_task(self._run(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, batch: list[_Pending[Row]]) -> None:
        try:
            await self._dispatch(key, batch)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
            queue = self._queues.get(key)
            if queue is not None and queue.due:
                self._flush(key)  # these requests waited for this slot

    def _split_to_size(self, pending: list[_Pending[Row]]) -> list[list[_Pending[Row]]]:
        """Whole requests, in arrival order, at most max_batch_size images a batch (a bigger request goes alone)."""
        batches: list[list[_Pending[Row]]] = [[]]
        size = 0
        for item in pending:
            if batches[-1] and size + len(item.images) > self.max_batch_size:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += len(item.images)
        return batches

    async def _dispatch(self, key: Hashable, batch: list[_Pending[Row]]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout_s = max(item.deadline for item in live) - now
        if timeout_s <= 0:
            _fail(live, DeadlineExceeded("the request waited past its deadline"))
            return
        for item in live:
            self._metrics.batch_wait.observe(now - item.enqueued_at)
        images = [image for item in live for image in item.images]
        try:
            rows = await self._predict(key, images, timeout_s)
        except BadRequest as error:
            if len(live) == 1:
                _fail(live, error)
                return
            # One bad image fails the merged call; halve until only its own request fails.
            middle = len(live) // 2
            await asyncio.gather(self._dispatch(key, live[:middle]), self._dispatch(key, live[middle:]))
        except GatewayError as error:
            _fail(live, error)
        except Exception as exc:
            logger.exception("batch of %d images failed", len(images))
            _fail(live, BackendFailed(f"batch failed: {exc!r}"))
        else:
            # Only answered batches count: a failed call (a label probe, a batch split to find a bad image)
            # would otherwise show its images twice in tlserve_batch_size.
            self._metrics.batch_size.observe(len(images))
            _resolve(live, rows)


def _resolve(live: list[_Pending[Row]], rows: list[Row]) -> None:
    if len(rows) != sum(len(item.images) for item in live):
        _fail(live, BackendFailed(f"upstream answered {len(rows)} rows for a batch of different size"))
        return
    start = 0
    for item in live:
        end = start + len(item.images)
        if not item.future.done():
            item.future.set_result(rows[start:end])
        start = end


def _fail(live: list[_Pending[Row]], error: GatewayError) -> None:
    for item in live:
        if not item.future.done():
            # A fresh instance per caller: one exception object must not collect several tracebacks.
            copy = type(error)(error.message)
            copy.__cause__ = error.__cause__
            item.future.set_exception(copy)

"""Server-side batching across concurrent requests, like TF Serving's `--enable_batching`.

Requests for the same (model, version, signature, output filter, input shapes) queue together; a batch thread
concatenates them along dimension 0 up to `max_batch_size` rows, once the batch is full or its oldest request
has waited `batch_timeout_micros`, runs the model once and hands each caller its own rows. A queue holding
`max_enqueued_batches` full batches answers RESOURCE_EXHAUSTED. If a merged batch fails with INVALID_ARGUMENT
(one undecodable image fails the whole graph call), its requests are retried one by one so only the culprit fails.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from service.modelserver.errors import Cancelled, InvalidArgument, ResourceExhausted, ServingError, Unavailable
from service.modelserver.metrics import ServerMetrics

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray]], Arrays]
QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters (defaults are TF Serving's, except threads: one per core here too)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 10
    thread_pool_name: str = "batch_threads"


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    run: RunFn
    model_name: str
    enqueued_at: float
    is_active: Callable[[], bool]
    future: Future[Arrays] = field(default_factory=Future)


@dataclass
class _Queue:
    tasks: collections.deque[_Task] = field(default_factory=collections.deque)
    rows: int = 0


def batch_key(
    model: str, version: int, signature: str, output_filter: tuple[str, ...], inputs: Mapping[str, np.ndarray]
) -> Hashable:
    """Requests may share a batch only if everything but dimension 0 agrees."""
    shapes = tuple(sorted((alias, value.dtype.str, value.shape[1:]) for alias, value in inputs.items()))
    return (model, version, signature, output_filter, shapes)


class Batcher:
    """A shared batch scheduler: `submit` blocks the calling (gRPC worker) thread until its rows are computed."""

    def __init__(self, options: BatchingOptions, metrics: ServerMetrics | None = None) -> None:
        self.options = options
        self.metrics = metrics or ServerMetrics()
        self.batch_size_counts: collections.Counter[int] = collections.Counter()
        self._queues: dict[Hashable, _Queue] = {}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        for index in range(self.options.num_batch_threads):
            thread = threading.Thread(target=self._work, name=f"{self.options.thread_pool_name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        with self._cond:
            leftovers = [task for queue in self._queues.values() for task in queue.tasks]
            self._queues.clear()
        for task in leftovers:  # never leave a caller blocked on a batch that will not run
            task.future.set_exception(Unavailable("batch scheduler stopped"))

    def pending_rows(self) -> int:
        """Rows waiting in queues (not yet taken by a batch thread)."""
        with self._cond:
            return sum(queue.rows for queue in self._queues.values())

    def submit(
        self,
        key: Hashable,
        inputs: Mapping[str, np.ndarray],
        run: RunFn,
        *,
        model_name: str = "",
        is_active: Callable[[], bool] = lambda: True,
    ) -> Arrays:
        """Queue one request and block until its rows are computed; `is_active` false = the caller went away."""
        size = _batch_rows(inputs)
        self.metrics.input_batch_size.observe(size, model_name)
        if size > self.options.max_batch_size:
            # Too big to share a batch: run it on its own (TF Serving would split it into several batches).
            return run(inputs)
        task = _Task(inputs, size, run, model_name, time.monotonic(), is_active)
        with self._cond:
            if self._stopping:
                raise Unavailable("batch scheduler is shutting down")
            queue = self._queues.setdefault(key, _Queue())
            if queue.rows + size > self.options.max_batch_size * self.options.max_enqueued_batches:
                raise ResourceExhausted(QUEUE_FULL_MESSAGE)
            queue.tasks.append(task)
            queue.rows += size
            self._cond.notify_all()
        return task.future.result()

    def _work(self) -> None:
        while True:
            with self._cond:
                tasks = self._next_batch()
            if tasks is None:
                return
            self._execute(tasks)

    def _next_batch(self) -> list[_Task] | None:
        """Wait (holding the condition) until some queue has a full or timed-out batch; take it."""
        timeout_s = self.options.batch_timeout_micros / 1e6
        while not self._stopping:
            waiting = [(queue.tasks[0].enqueued_at, key) for key, queue in self._queues.items() if queue.tasks]
            if not waiting:
                self._cond.wait()
                continue
            oldest_at, key = min(waiting, key=lambda item: item[0])
            queue = self._queues[key]
            remaining_s = oldest_at + timeout_s - time.monotonic()
            if queue.rows >= self.options.max_batch_size or remaining_s <= 0:
                return self._take(key, queue)
            self._cond.wait(timeout=remaining_s)
        return None

    def _take(self, key: Hashable, queue: _Queue) -> list[_Task]:
        tasks = [queue.tasks.popleft()]
        rows = tasks[0].size
        while queue.tasks and rows + queue.tasks[0].size <= self.options.max_batch_size:
            task = queue.tasks.popleft()
            tasks.append(task)
            rows += task.size
        queue.rows -= rows
        if not queue.tasks:
            del self._queues[key]
        return tasks

    def _execute(self, tasks: list[_Task]) -> None:
        tasks = _drop_abandoned(tasks)
        if not tasks:
            return
        rows = sum(task.size for task in tasks)
        now = time.monotonic()
        for task in tasks:
            self.metrics.queuing_latency.observe((now - task.enqueued_at) * 1e6, self.options.thread_pool_name)
        self.metrics.processed_batch_size.observe(rows, tasks[0].model_name)
        with self._cond:
            self.batch_size_counts[rows] += 1
        try:
            outputs = tasks[0].run(_concatenate([task.inputs for task in tasks]))
            _split(outputs, tasks)
        except InvalidArgument as exc:
            if len(tasks) == 1:
                tasks[0].future.set_exception(exc)
            else:
                logger.info("batch of %d requests failed (%s); retrying them one by one", len(tasks), exc.message)
                for task in tasks:
                    _run_alone(task)
        except BaseException as exc:
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(exc)


def _drop_abandoned(tasks: list[_Task]) -> list[_Task]:
    """Requests whose caller went away (deadline passed, cancelled) are not computed."""
    live = []
    for task in tasks:
        if task.is_active():
            live.append(task)
        else:
            task.future.set_exception(Cancelled("the caller went away before its batch ran"))
    return live


def _run_alone(task: _Task) -> None:
    try:
        task.future.set_result(task.run(task.inputs))
    except BaseException as exc:
        task.future.set_exception(exc)


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
    if len(sizes) != 1:
        raise InvalidArgument("Batching session Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _concatenate(inputs: list[Mapping[str, np.ndarray]]) -> Arrays:
    if len(inputs) == 1:
        return dict(inputs[0])
    return {alias: np.concatenate([one[alias] for one in inputs], axis=0) for alias in inputs[0]}


def _split(outputs: Arrays, tasks: list[_Task]) -> None:
    total = sum(task.size for task in tasks)
    for alias, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ServingError(
                f"Batched output tensor {alias} has {value.shape[0] if value.ndim else 0} rows, expected {total}"
            )
    start = 0
    for task in tasks:
        end = start + task.size
        task.future.set_result({alias: value[start:end] for alias, value in outputs.items()})
        start = end

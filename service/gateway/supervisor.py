"""Keeps the embedded model server of `tlserve serve` running, as a process manager would.

A child that dies is restarted after an exponential backoff (doubling per crash in the budget window, capped);
while it is down `ModelServerState.up` is false and `FailFastBackend` answers every upstream call with 503 at once
instead of letting it wait for its deadline. More than `max_restarts` crashes within `window_s` is a crash loop:
the supervisor gives up and asks the gateway to stop, so the process manager above sees the failure.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.gateway.errors import BackendUnavailable
from service.gateway.model_server_child import ModelServerChild, stop_child, wait_until_listening
from service.gateway.upstream.backend import (
    Backend,
    MetadataRequest,
    MetadataResponse,
    PredictRequest,
    PredictResponse,
    StatusRequest,
    StatusResponse,
)
from tlserve.console import CommandError

logger = logging.getLogger(__name__)

DOWN_MESSAGE = "the embedded model server is restarting"


@dataclass(frozen=True)
class RestartPolicy:
    """How often a crashed child is restarted: `max_restarts` within `window_s`, waiting `backoff_s` doubled per
    crash still in the window, at most `max_backoff_s`."""

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay_s(self, crashes_in_window: int) -> float:
        return float(min(self.backoff_s * 2 ** max(crashes_in_window - 1, 0), self.max_backoff_s))


class ModelServerState:
    """Up/down and the restart count, written by the supervisor thread, read by the gateway's event loop and
    collected by Prometheus (`tlserve_model_server_up`, `tlserve_model_server_restarts_total`)."""

    def __init__(self) -> None:
        self._up = threading.Event()
        self._restarts = 0
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    @property
    def restarts(self) -> int:
        return self._restarts

    def mark_up(self) -> None:
        self._up.set()

    def mark_down(self) -> None:
        self._up.clear()

    def count_restart(self) -> None:
        with self._lock:
            self._restarts += 1

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("tlserve_model_server_up", "1 while the embedded model server is running and listening")
        up.add_metric([], 1.0 if self.up else 0.0)
        restarts = CounterMetricFamily(
            "tlserve_model_server_restarts", "Restarts of the embedded model server after it exited"
        )
        restarts.add_metric([], float(self._restarts))
        yield from (up, restarts)


class FailFastBackend:
    """A Backend that answers 503 at once while the supervised model server is down, else delegates."""

    def __init__(self, inner: Backend, state: ModelServerState) -> None:
        self._inner = inner
        self._state = state

    def _check_up(self) -> None:
        if not self._state.up:
            raise BackendUnavailable(DOWN_MESSAGE)

    async def predict(self, request: PredictRequest, timeout_s: float) -> PredictResponse:
        self._check_up()
        return await self._inner.predict(request, timeout_s)

    async def get_model_metadata(self, request: MetadataRequest, timeout_s: float) -> MetadataResponse:
        self._check_up()
        return await self._inner.get_model_metadata(request, timeout_s)

    async def get_model_status(self, request: StatusRequest, timeout_s: float) -> StatusResponse:
        self._check_up()
        return await self._inner.get_model_status(request, timeout_s)

    async def close(self) -> None:
        await self._inner.close()


class ModelServerSupervisor:
    """Starts the child, watches it from a thread, restarts it, gives up on a crash loop (`gave_up` says why)."""

    def __init__(
        self,
        spawn: Callable[[], ModelServerChild],
        policy: RestartPolicy,
        *,
        on_give_up: Callable[[], None],
        ready_timeout_s: float | None = None,
    ) -> None:
        self.state = ModelServerState()
        self.gave_up: str | None = None
        self._spawn = spawn
        self._policy = policy
        self._on_give_up = on_give_up
        self._ready_timeout_s = ready_timeout_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # orders "start a child" against "stop": no child outlives stop()
        self._child: ModelServerChild | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the first child and wait until it listens (a failure here is the caller's CommandError)."""
        child = self._start_child()
        assert child is not None
        try:
            self._wait_listening(child)
        except CommandError:
            stop_child(child.process)
            raise
        self.state.mark_up()
        self._thread = threading.Thread(target=self._watch, args=(child,), daemon=True, name="model-server-watch")
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and stop the current child (SIGTERM, then SIGKILL)."""
        with self._lock:
            self._stopping.set()
            child = self._child
        self.state.mark_down()
        if child is not None:
            stop_child(child.process)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _start_child(self) -> ModelServerChild | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._child = self._spawn()
            return self._child

    def _wait_listening(self, child: ModelServerChild) -> None:
        if self._ready_timeout_s is None:
            wait_until_listening(child)
        else:
            wait_until_listening(child, self._ready_timeout_s)

    def _watch(self, child: ModelServerChild) -> None:
        """Thread body: wait for the child to exit, then restart it or give up."""
        crashes: collections.deque[float] = collections.deque()
        while True:
            code = child.process.wait()
            if self._stopping.is_set():
                return
            self.state.mark_down()
            now = time.monotonic()
            crashes.append(now)
            while crashes and crashes[0] < now - self._policy.window_s:
                crashes.popleft()
            if len(crashes) > self._policy.max_restarts:
                self._give_up(code, len(crashes))
                return
            delay_s = self._policy.delay_s(len(crashes))
            logger.warning("the embedded model server exited with code %s; restarting it in %.1fs", code, delay_s)
            if self._stopping.wait(delay_s):
                return
            restarted = self._restart()
            if restarted is None:
                return
            child = restarted

    def _restart(self) -> ModelServerChild | None:
        """A new child, marked up once it listens; one that exits or hangs first is returned dead (a crash)."""
        child = self._start_child()
        if child is None:
            return None
        self.state.count_restart()
        try:
            self._wait_listening(child)
        except CommandError as exc:
            logger.warning("%s", exc)
            if child.process.poll() is None:
                child.process.kill()
            return child
        if not self._stopping.is_set():
            logger.info("the embedded model server is back (restart %d)", self.state.restarts)
            self.state.mark_up()
        return child

    def _give_up(self, code: int, crashes: int) -> None:
        self.gave_up = (
            f"the embedded model server exited with code {code}, exit {crashes} within {self._policy.window_s:g}s "
            f"(restart budget {self._policy.max_restarts}); giving up"
        )
        logger.error("%s; stopping the gateway", self.gave_up)
        self._on_give_up()

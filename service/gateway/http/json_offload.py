"""TF Serving REST predict bodies parsed and converted to a PredictRequest, big ones in a worker process.

`json.loads` and `np.asarray` over nested lists hold the GIL for the whole C call: a 23 MB body of pixel values
held the event loop (HTTP and gRPC alike) for 1-2 s, with or without `asyncio.to_thread`. Bodies of at least
`json_offload_min_body_bytes` go to a small spawn-context process pool instead; smaller ones stay in-process,
where a round trip to a worker would cost more than the parse. Both paths run `convert_predict_body`, so their
answers and error messages are the same.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from service.gateway.errors import BadRequest, GatewayError, ValidationFailed
from service.gateway.http.body_limits import check_json_rows
from service.gateway.http.tfserving_json import InputTypes, build_predict_request, load_json, select_signature
from tlserve.protocol import predict_pb2

logger = logging.getLogger(__name__)

SignatureInputs = dict[str, InputTypes]  # signature name → its inputs' dtypes (from upstream metadata)
Converted = tuple[Any, bool]  # (PredictRequest with inputs and signature name, whether the body used rows)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def convert_predict_body(body: bytes, max_rows: int, signatures: SignatureInputs | None) -> Converted | None:
    """Parse, check the rows, build the request; None when the body is fine so far but `signatures` is unknown
    (the caller then raises the error that kept it from fetching them, in the order TF Serving would)."""
    payload = load_json(body)
    check_json_rows(payload, max_rows)
    if signatures is None:
        return None
    name = payload.get("signature_name", "") if isinstance(payload, dict) else ""
    input_types = select_signature(signatures, name if isinstance(name, str) else "")
    try:
        return build_predict_request(payload, input_types)
    except ValidationFailed as exc:
        # TF Serving answers a body it cannot use with 400 INVALID_ARGUMENT; its clients expect no 422 here.
        raise BadRequest(exc.message) from exc


def _convert_in_worker(body: bytes, max_rows: int, signatures: SignatureInputs | None) -> tuple[bytes, bool] | None:
    """The worker's half: the same conversion, answered as wire bytes (a PredictRequest does not pickle)."""
    converted = convert_predict_body(body, max_rows, signatures)
    if converted is None:
        return None
    request, row_format = converted
    return request.SerializeToString(), row_format


def _prepare_worker(gateway_pid: int) -> None:
    """In each worker, first: Ctrl-C is the gateway's to handle (it shuts the pool down), and the worker dies with
    the gateway even when that is SIGKILLed (a worker holds both ends of its job pipe, so it never sees EOF)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != gateway_pid:
        os._exit(0)  # the gateway died before prctl took effect


class BodyConverter:
    """Runs `convert_predict_body` in-process for small bodies and in `workers` processes for big ones.

    The pool starts with the first big body; at most `workers` bodies are in the workers at once (later ones
    wait here, their bytes already counted by the body limits). A worker that dies breaks the pool: the body is
    then converted in-process and a new pool is started for the next one. A pool that breaks before it has
    converted anything, or cannot be created, cannot run here (an entry script without `if __name__ ==
    "__main__":`, which spawn re-runs; no /dev/shm for its locks): offloading is then switched off, with one error
    in the log.
    """

    def __init__(self, workers: int, min_body_bytes: int) -> None:
        self.workers = workers
        self.min_body_bytes = min_body_bytes
        self._executor: ProcessPoolExecutor | None = None
        self._converted = 0  # bodies the current pool has answered
        self._slots = asyncio.Semaphore(max(workers, 1))

    def offloads(self, body: bytes) -> bool:
        return self.workers > 0 and len(body) >= self.min_body_bytes

    async def convert(self, body: bytes, max_rows: int, signatures: SignatureInputs | None) -> Converted | None:
        if not self.offloads(body):
            return convert_predict_body(body, max_rows, signatures)
        async with self._slots:
            try:
                executor = self._start()
            except (OSError, ImportError, NotImplementedError) as exc:  # e.g. no /dev/shm for the pool's locks
                logger.error("JSON conversion workers cannot start (%s); converting REST bodies in-process", exc)
                self.workers = 0
                return convert_predict_body(body, max_rows, signatures)
            try:
                answer = await asyncio.wrap_future(executor.submit(_convert_in_worker, body, max_rows, signatures))
            except BrokenProcessPool:
                self._broken(executor)
                return convert_predict_body(body, max_rows, signatures)
            except GatewayError:
                self._converted += 1  # a bad body, answered by a working worker
                raise
            self._converted += 1
        if answer is None:
            return None
        serialized, row_format = answer
        return predict_pb2.PredictRequest.FromString(serialized), row_format

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the gateway has gRPC and event-loop threads that a forked child must not inherit.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_prepare_worker, initargs=(os.getpid(),)
            )
        return self._executor

    def _broken(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is not executor:
            return  # another request already dealt with it
        if self._converted:
            logger.warning("a JSON conversion worker died; converting this body in-process, restarting the pool")
        else:
            logger.error("JSON conversion workers cannot start; converting REST bodies in-process from now on")
            self.workers = 0
        self._discard(executor)

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            self._converted = 0
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (a conversion still running is abandoned: its request is being cancelled too)."""
        if self._executor is not None:
            self._discard(self._executor)

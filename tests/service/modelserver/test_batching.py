"""Server-side batching: merging, per-request results, culprit isolation, full queue, parameters file."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf

from service.modelserver.batching import QUEUE_FULL_MESSAGE, Batcher, BatchingOptions
from service.modelserver.batching_config import parse_batching_parameters
from service.modelserver.errors import Cancelled, InvalidArgument, ResourceExhausted, Unavailable
from tests.conftest import random_images
from tests.support.modelserver import predict_request, running_model_server
from tlserve.processes import wait_until

KEY = ("demo", 1, "serving_default", (), ())


def doubling_run(calls: list[int]):
    """A fake model: doubles its input, fails the whole batch if any row is negative (like a bad image)."""

    def run(inputs):
        values = inputs["x"]
        calls.append(len(values))
        if (values < 0).any():
            raise InvalidArgument("bad row")
        return {"y": values * 2}

    return run


@pytest.fixture
def batcher():
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=30_000_000, num_batch_threads=1)
    scheduler = Batcher(options)
    scheduler.start()
    yield scheduler
    scheduler.stop()


def wait_until_queued(scheduler, timeout_s: float = 30.0) -> None:
    """Bounded poll until a request waits in the scheduler's queue (not yet taken by a batch thread)."""
    wait_until(lambda: scheduler.pending_rows() >= 1, timeout_s=timeout_s, what="a request queued", interval_s=0.01)


def submit_concurrently(batcher, run, rows: list[float]):
    def one(value: float):
        try:
            return batcher.submit(KEY, {"x": np.array([value])}, run)["y"].tolist()
        except InvalidArgument as exc:
            return exc.message

    with ThreadPoolExecutor(len(rows)) as pool:
        return list(pool.map(one, rows))


def test_concurrent_requests_merge_into_one_batch_and_get_their_own_rows(batcher):
    calls: list[int] = []
    results = submit_concurrently(batcher, doubling_run(calls), [1.0, 2.0, 3.0, 4.0])
    assert results == [[2.0], [4.0], [6.0], [8.0]]
    assert calls == [4]
    assert batcher.batch_size_counts == {4: 1}


def test_a_failing_row_fails_only_its_own_request(batcher):
    calls: list[int] = []
    results = submit_concurrently(batcher, doubling_run(calls), [1.0, -1.0, 3.0, 4.0])
    assert results == [[2.0], "bad row", [6.0], [8.0]]
    assert calls[0] == 4  # merged first, then retried one by one
    assert sorted(calls[1:]) == [1, 1, 1, 1]


def test_full_queue_answers_resource_exhausted():
    options = BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1)
    scheduler = Batcher(options)
    scheduler.start()
    release = threading.Event()
    started = threading.Event()

    def blocking_run(inputs):
        started.set()
        release.wait(30)
        return {"y": inputs["x"]}

    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(scheduler.submit, KEY, {"x": np.array([1.0])}, blocking_run)
            assert started.wait(30)
            queued = pool.submit(scheduler.submit, KEY, {"x": np.array([2.0])}, blocking_run)
            wait_until_queued(scheduler)  # the second task is queued behind the busy thread
            with pytest.raises(ResourceExhausted) as caught:
                scheduler.submit(KEY, {"x": np.array([3.0])}, blocking_run)
            release.set()
            assert running.result(30)["y"].tolist() == [1.0]
            assert queued.result(30)["y"].tolist() == [2.0]
        assert caught.value.message == QUEUE_FULL_MESSAGE
    finally:
        release.set()
        scheduler.stop()


def test_oversized_request_runs_on_its_own(batcher):
    calls: list[int] = []
    result = batcher.submit(KEY, {"x": np.arange(6.0)}, doubling_run(calls))
    assert result["y"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert calls == [6]


def test_batching_parameters_file_uses_tf_serving_field_names():
    options = parse_batching_parameters(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 3 }\nnum_batch_threads { value: 2 }\n"
    )
    assert options == BatchingOptions(
        max_batch_size=8, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=3
    )


def test_batching_parameters_typo_is_rejected():
    with pytest.raises(InvalidArgument, match="max_batch_sise"):
        parse_batching_parameters("max_batch_sise { value: 8 }")


def test_grpc_batching_merges_clients_and_isolates_a_bad_image(module_repo, tmp_path, exported_version):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 30000000 }\n")
    images = random_images(3, seed=5)
    # Cut short after a valid header: the header check passes it, so only the graph's decode can fail on it.
    truncated = images[0][: len(images[0]) // 2]
    requests = [predict_request([image]) for image in images] + [predict_request([truncated])]
    # After the merged batch fails on the broken image the server runs each good image alone, so the reference is
    # computed the same way (batch of one); a different batch size may differ in the last float bits.
    serving_default = tf.saved_model.load(str(exported_version)).signatures["serving_default"]
    expected = [serving_default(image_bytes=tf.constant([image]))["probabilities"].numpy()[0] for image in images]
    with running_model_server(module_repo(versions=(1,)), batching_parameters_file=params) as server:
        stub = server.prediction_stub()

        def call(request):
            try:
                return tf.make_ndarray(stub.Predict(request, timeout=60).outputs["probabilities"])
            except grpc.RpcError as exc:
                return exc.code()

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, requests))
        assert server.server.batcher.batch_size_counts[4] == 1
    assert results[3] == grpc.StatusCode.INVALID_ARGUMENT
    for row, result in enumerate(results[:3]):
        assert np.max(np.abs(result[0] - expected[row])) <= 1e-6


def test_stopping_fails_queued_requests_instead_of_leaving_them_blocked():
    options = BatchingOptions(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=1)
    scheduler = Batcher(options)
    scheduler.start()
    calls: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(scheduler.submit, KEY, {"x": np.array([1.0])}, doubling_run(calls))
        wait_until_queued(scheduler)
        scheduler.stop()
        with pytest.raises(Unavailable):
            waiting.result(30)
    assert calls == []


def test_request_whose_caller_went_away_is_not_computed(batcher):
    calls: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        abandoned = pool.submit(
            batcher.submit, KEY, {"x": np.array([9.0])}, doubling_run(calls), is_active=lambda: False
        )
        others = [pool.submit(batcher.submit, KEY, {"x": np.array([float(i)])}, doubling_run(calls)) for i in range(3)]
        assert [future.result(30)["y"].tolist() for future in others] == [[0.0], [2.0], [4.0]]
        with pytest.raises(Cancelled):
            abandoned.result(30)
    assert calls == [3]


def test_grpc_full_batch_queue_answers_resource_exhausted(module_repo, tmp_path, monkeypatch):
    from service.modelserver.servable import Servable

    params = tmp_path / "batching.config"
    params.write_text(
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1 }\n"
    )
    started, release = threading.Event(), threading.Event()
    original_run = Servable.run

    def held_run(self, *args, **kwargs):
        started.set()
        release.wait(60)
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(Servable, "run", held_run)
    with running_model_server(
        module_repo(versions=(1,)), batching_parameters_file=params, enable_model_warmup=False
    ) as server:
        stub = server.prediction_stub()
        batcher = server.server.batcher
        with ThreadPoolExecutor(2) as pool:
            try:
                running = pool.submit(stub.Predict, predict_request(random_images(1)), timeout=60)
                assert started.wait(60)
                queued = pool.submit(stub.Predict, predict_request(random_images(1)), timeout=60)
                wait_until_queued(batcher)
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Predict(predict_request(random_images(1)), timeout=60)
            finally:
                release.set()
            assert running.result(60).model_spec.version.value == 1
            assert queued.result(60).model_spec.version.value == 1
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == QUEUE_FULL_MESSAGE

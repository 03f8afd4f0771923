"""Micro-batching through /predict: merged upstream calls, answers to the right callers, culprits fail alone."""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.gateway.core import routing
from service.gateway.http.app import create_app
from tests.conftest import random_images
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer, corrupt_png, image_label

# A batch leaves when full: the wait (and each request's deadline) outlasts any scheduling delay on a loaded machine.
MERGE_ALL = {"batch_wait_timeout_s": 30.0, "request_timeout_s": 60.0}


def metric_samples(text: str, name: str) -> dict[str, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(name):
                samples[sample.name + str(sorted(sample.labels.items()))] = sample.value
    return samples


async def post_concurrently(app, bodies: list[bytes]) -> tuple[list[httpx.Response], str]:
    """POST each image as its own /predict request, all at once; also return /metrics afterwards."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            requests = [client.post("/predict", files=[("files", ("i.png", body, "image/png"))]) for body in bodies]
            responses = await asyncio.gather(*requests)
            metrics = (await client.get("/metrics")).text
    return list(responses), metrics


truncated_png = corrupt_png  # the model cannot decode it; a truncated file is refused before the batch now


def test_32_concurrent_callers_form_batches_and_get_their_own_answers():
    upstream = FakeModelServer(delay_s=0.01)
    # The wait outlasts any scheduling delay, so the batch leaves exactly when the 32nd request arrives (no label
    # routing: its first-request probe would leave alone).
    settings = make_settings(**MERGE_ALL, max_batch_size=32, default_label="")
    app = create_app(settings, backend=upstream)
    images = random_images(32, seed=1)
    responses, metrics = asyncio.run(post_concurrently(app, images))
    assert [response.status_code for response in responses] == [200] * 32
    assert [r.json()["predictions"][0]["label"] for r in responses] == [image_label(image) for image in images]
    batch_sizes = [len(request.inputs["image_bytes"].string_val) for request in upstream.predict_requests]
    assert batch_sizes == [32]
    samples = metric_samples(metrics, "tlserve_batch_size")
    assert samples["tlserve_batch_size_count[]"] == 1
    assert samples["tlserve_batch_size_sum[]"] == 32


def test_a_burst_without_the_default_label_probes_it_once_and_sends_each_image_once_more_at_most(monkeypatch):
    # Exact probe count: a slow machine must not reach the missing-label recheck interval during the burst.
    monkeypatch.setattr(routing, "MISSING_LABEL_RECHECK_S", 3600.0)
    # What `tlserve train` and `make demo` produce before the first promote: no `stable` label, default settings.
    upstream = FakeModelServer(models={"demo": {1: None}}, delay_s=0.01)
    app = create_app(make_settings(batch_wait_timeout_s=0.0), backend=upstream)
    assert app.state.settings.default_label == "stable"
    images = random_images(32, seed=6)
    responses, metrics = asyncio.run(post_concurrently(app, images))
    assert [response.status_code for response in responses] == [200] * 32
    assert [r.json()["predictions"][0]["label"] for r in responses] == [image_label(image) for image in images]
    sent = [
        (request.model_spec.version_label, len(request.inputs["image_bytes"].string_val))
        for request in upstream.predict_requests
    ]
    assert [size for label, size in sent if label == "stable"] == [1]  # one probe, one image
    assert sum(size for label, size in sent if label == "") == 32
    samples = metric_samples(metrics, "tlserve_batch_size")
    assert samples["tlserve_batch_size_sum[]"] == 32  # the failed probe is not a batch
    assert samples["tlserve_batch_size_count[]"] == len([label for label, _ in sent if label == ""])


def test_batching_off_sends_one_upstream_call_per_request():
    upstream = FakeModelServer()
    app = create_app(make_settings(batching_enabled=False), backend=upstream)
    responses, _ = asyncio.run(post_concurrently(app, random_images(6, seed=2)))
    assert all(response.status_code == 200 for response in responses)
    assert [len(request.inputs["image_bytes"].string_val) for request in upstream.predict_requests] == [1] * 6


def test_bad_image_in_a_merged_batch_fails_only_its_caller():
    upstream = FakeModelServer()
    # No label routing here (its first-request probe would leave alone): all eight requests merge into one call,
    # which leaves exactly when the eighth arrives.
    settings = make_settings(**MERGE_ALL, max_batch_size=8, default_label="")
    app = create_app(settings, backend=upstream)
    images = random_images(7, seed=3)
    bodies = [*images[:3], truncated_png(), *images[3:]]
    responses, _ = asyncio.run(post_concurrently(app, bodies))
    statuses = [response.status_code for response in responses]
    assert statuses == [200, 200, 200, 400, 200, 200, 200, 200]
    assert responses[3].json()["error"]["code"] == "invalid_image"
    assert responses[3].json()["error"]["message"].startswith("image 0 (i.png) could not be decoded: ")
    good = [response.json()["predictions"][0]["label"] for index, response in enumerate(responses) if index != 3]
    assert good == [image_label(image) for image in images]
    # The merged call was tried first and failed; the split retries isolated the culprit.
    assert len(upstream.predict_requests[0].inputs["image_bytes"].string_val) == 8


@pytest.mark.parametrize("batching", [True, False])
def test_a_truncated_image_in_a_multi_image_request_is_named_by_index_and_file_name(batching):
    upstream = FakeModelServer()
    app = create_app(make_settings(batching_enabled=batching), backend=upstream)
    good = random_images(2, seed=4)
    files = [
        ("files", (name, body, "image/png"))
        for name, body in zip(["a.png", "b.png", "c.png"], [good[0], truncated_png(), good[1]], strict=True)
    ]

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await client.post("/predict", files=files)

    response = asyncio.run(scenario())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"
    assert response.json()["error"]["message"].startswith("image 1 (b.png) could not be decoded: ")


def test_cancelled_caller_is_not_sent_upstream():
    from service.gateway.core.batching import MicroBatcher
    from service.gateway.core.metrics import GatewayMetrics

    sent: list[list[bytes]] = []

    async def predict(key, images, timeout_s):
        sent.append(images)
        return [image.decode() for image in images]

    async def scenario() -> list[str]:
        # The batch timer never fires here: close() sends the queue, after "gone" has been cancelled.
        batcher = MicroBatcher(predict, max_batch_size=8, batch_wait_timeout_s=60, metrics=GatewayMetrics())
        gone = asyncio.create_task(batcher.submit("m", [b"gone"], 60.0))
        stays = asyncio.create_task(batcher.submit("m", [b"stays"], 60.0))
        await asyncio.sleep(0)  # both are queued
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        assert sent == []
        await batcher.close()
        return await stays

    assert asyncio.run(scenario()) == ["stays"]
    assert sent == [[b"stays"]]


def test_requests_for_different_targets_are_not_merged():
    upstream = FakeModelServer()
    app = create_app(make_settings(batch_wait_timeout_s=0.05), backend=upstream, rng=random.Random(0))

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                image = random_images(1)[0]
                files = [("files", ("i.png", image, "image/png"))]
                return await asyncio.gather(
                    client.post("/predict?version=1", files=files), client.post("/predict?version=2", files=files)
                )

    first, second = asyncio.run(scenario())
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    assert sorted(request.model_spec.version.value for request in upstream.predict_requests) == [1, 2]


def test_requests_arriving_while_a_batch_is_in_flight_merge_into_the_next_one():
    from service.gateway.core.batching import MicroBatcher
    from service.gateway.core.metrics import GatewayMetrics

    sent: list[list[bytes]] = []

    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_predict(key, images, timeout_s):
        sent.append(images)
        if len(sent) == 1:
            started.set()
            await release.wait()  # the first batch stays in flight until the others are queued
        return [image.upper() for image in images]

    async def scenario():
        batcher = MicroBatcher(
            slow_predict,
            max_batch_size=32,
            batch_wait_timeout_s=0.0,
            max_concurrent_batches=1,
            metrics=GatewayMetrics(),
        )
        first = asyncio.create_task(batcher.submit("m", [b"a"], 60.0))
        await asyncio.wait_for(started.wait(), 30)  # the idle batcher has sent "a" alone, without waiting
        assert sent == [[b"a"]]
        later = [asyncio.create_task(batcher.submit("m", [name], 60.0)) for name in (b"b", b"c", b"d")]
        for _ in range(5):
            await asyncio.sleep(0)  # b, c, d are queued and their wait is over; the only slot is still taken
        assert sent == [[b"a"]]
        release.set()
        results = await asyncio.gather(first, *later)
        return results

    assert asyncio.run(scenario()) == [[b"A"], [b"B"], [b"C"], [b"D"]]
    assert sent == [[b"a"], [b"b", b"c", b"d"]]


def test_a_caller_past_its_deadline_gets_deadline_exceeded_while_others_keep_waiting():
    from service.gateway.core.batching import MicroBatcher
    from service.gateway.core.metrics import GatewayMetrics
    from service.gateway.errors import DeadlineExceeded

    sent: list[list[bytes]] = []

    async def slow_predict(key, images, timeout_s):
        sent.append(images)
        await asyncio.sleep(0.5)
        return list(images)

    async def scenario():
        batcher = MicroBatcher(
            slow_predict, max_batch_size=8, batch_wait_timeout_s=0.0, max_concurrent_batches=1, metrics=GatewayMetrics()
        )
        busy = asyncio.create_task(batcher.submit("m", [b"first"], 5.0))
        await asyncio.sleep(0.01)
        impatient = asyncio.create_task(batcher.submit("m", [b"impatient"], 0.05))  # queued behind "first"
        patient = asyncio.create_task(batcher.submit("m", [b"patient"], 5.0))
        with pytest.raises(DeadlineExceeded):
            await impatient
        return await busy, await patient

    assert asyncio.run(scenario()) == ([b"first"], [b"patient"])
    assert sent == [[b"first"], [b"patient"]]  # the expired request never went upstream

"""Issue 9.6/9.7 on /predict: decode failures name the image in plain words; TIFF is served as it is trained on."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from PIL import Image

from service.gateway.core import image_formats
from service.gateway.core.decode_errors import describe_decode_failure, strip_tf_internals
from tests.conftest import random_images
from tests.service.gateway.fakes import corrupt_png, image_label, rpc_error
from tests.service.gateway.in_process import fake_and_gateway, http_client

TF_INTERNALS = ("Graph execution error", "Detected at node", "DecodeImage", "[Op:", "{{node", "File ")


def tf_message(reason: str) -> str:
    """TensorFlow's decoder error as the model server passes it on (captured from tf.io.decode_image in a graph)."""
    return (
        "Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined at (most recent call "
        'last):\n  File "/srv/export.py", line 11, in <module>\n\n  File "/srv/export.py", line 8, in serve\n\n'
        f"{reason}\n\t [[{{{{node map/while/decode_image/DecodeImage}}}}]] [Op:__inference_serve_59]"
    )


def upload(client, data: bytes, name: str = "a.png", content_type: str = "image/png"):
    return client.post("/predict", files=[("files", (name, data, content_type))])


def test_truncated_png_is_a_plain_400_naming_the_file_and_never_reaches_the_model(client, fake_upstream):
    image = random_images(1)[0]
    response = upload(client, image[: len(image) // 2])
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_image",
        "message": "image 0 (a.png) is a truncated PNG file (its end marker is missing)",
    }
    assert fake_upstream.predict_requests == []


def test_truncated_jpeg_is_refused_like_training_refuses_it(client):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, "JPEG")
    response = upload(client, buffer.getvalue()[:-40], "b.jpg", "image/jpeg")
    assert response.status_code == 400
    assert "image 0 (b.jpg) is a truncated JPEG file" in response.json()["error"]["message"]


def test_model_decode_error_is_worded_without_tensorflow_internals(client, fake_upstream):
    fake_upstream.fail_with = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, tf_message("Invalid PNG data, size 6210"))
    response = upload(client, corrupt_png())
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message == "image 0 (a.png) could not be decoded: its PNG data is truncated or corrupt"
    assert not [part for part in TF_INTERNALS if part in message]


@pytest.mark.parametrize(
    ("reason", "image_format", "expected"),
    [
        ("Invalid PNG data, size 6210", "PNG", "its PNG data is truncated or corrupt"),
        ("jpeg::Uncompress failed. Invalid JPEG data or crop window.", "JPEG", "its JPEG data is truncated or corrupt"),
        ("Invalid GIF data (size 26), failed to slurp gif file", "GIF", "its GIF data is truncated or corrupt"),
        ("Number of channels inherent in the image must be 1, 3 or 4, was 0", "BMP", "its number of colour channels"),
        ("Unknown image file format. One of JPEG, PNG, GIF, BMP required.", None, "it is not a JPEG, PNG, BMP"),
        ("something new", "PNG", "its PNG data is unreadable (truncated, corrupt or an unsupported variant)"),
    ],
)
def test_decode_failures_in_plain_words(reason, image_format, expected):
    described = describe_decode_failure(tf_message(reason), image_format)
    assert described.startswith(expected)
    assert not [part for part in TF_INTERNALS if part in described]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "image 0 cannot be decoded: broken data stream when reading image file",
            "its PNG data is truncated or corrupt",
        ),
        ("image 3 cannot be decoded: image file is truncated (4 bytes not processed)", "its PNG data is truncated"),
        ("image 1 cannot be decoded: decoder error -2", "its PNG data is unreadable (decoder error -2)"),
    ],
)
def test_the_model_servers_own_wording_leaves_only_its_reason(message, expected):
    # The embedded model server names the image by its index in its own call; the gateway names it itself.
    described = describe_decode_failure(message, "PNG")
    assert described.startswith(expected)
    assert "image" not in described.replace("image file", "")


def test_a_model_server_decode_error_names_the_image_once_in_one_line(client, fake_upstream):
    wording = "image 0 cannot be decoded: broken data stream when reading image file"
    fake_upstream.fail_with = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, wording)
    message = upload(client, corrupt_png()).json()["error"]["message"]
    assert message == "image 0 (a.png) could not be decoded: its PNG data is truncated or corrupt"


def test_other_tensorflow_messages_lose_their_internals():
    assert strip_tf_internals(tf_message("Input to reshape is a tensor with 12 values")) == (
        "Input to reshape is a tensor with 12 values"
    )
    assert strip_tf_internals("plain words") == "plain words"


def tiff(width: int = 24, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, "TIFF")
    return buffer.getvalue()


def test_tiff_is_served_as_training_reads_it(client, fake_upstream):
    # Training converts TIFF to RGB PNG (training.data.checks.to_png_bytes); /predict refused it with 415.
    response = upload(client, tiff(), "scan.tif", "image/tiff")
    assert response.status_code == 200, response.text
    (sent,) = fake_upstream.predict_requests[0].inputs["image_bytes"].string_val
    assert sent.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(sent)) as converted:
        assert (converted.mode, converted.size) == ("RGB", (24, 16))
    assert response.json()["predictions"][0]["label"] == image_label(sent)


def test_tiff_over_the_pixel_limit_is_413_before_it_is_decoded(make_client):
    response = upload(make_client(max_image_pixels=100), tiff(), "big.tif", "image/tiff")
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "image 0 (big.tif) is 24x16 = 384 pixels, more than the limit of 100"
    )


def test_a_broken_tiff_is_a_400_naming_it(client):
    response = upload(client, tiff()[:40], "bad.tif", "image/tiff")
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"]
        == "image 0 (bad.tif) is a TIFF that could not be decoded (truncated or corrupt)"
    )


def test_header_check_errors_name_the_multipart_file_and_keep_their_status(make_client):
    client = make_client(max_image_pixels=100)
    big = upload(client, random_images(1)[0], "big.png")
    assert big.status_code == 413
    assert big.json()["error"]["message"].startswith("image 0 (big.png) is ")
    ppm = io.BytesIO()
    Image.new("RGB", (4, 4)).save(ppm, "PPM")
    unsupported = upload(client, ppm.getvalue(), "x.ppm", "image/x-portable-pixmap")
    assert unsupported.status_code == 415
    assert unsupported.json()["error"]["message"].startswith("image 0 (x.ppm) is PPM; supported: ")


def test_tf_serving_rest_predict_serves_tiff_and_refuses_truncated_images_like_predict(client, fake_upstream):
    import base64

    def rest(image: bytes):
        body = {"instances": [{"b64": base64.b64encode(image).decode()}]}
        return client.post("/v1/models/demo:predict", json=body)

    answered = rest(tiff())
    assert answered.status_code == 200, answered.text
    (sent,) = fake_upstream.predict_requests[0].inputs["image_bytes"].string_val
    assert sent.startswith(b"\x89PNG"), "the model receives the PNG training would have made"
    image = random_images(1)[0]
    truncated = rest(image[: len(image) // 2])
    assert truncated.status_code == 400
    assert truncated.json() == {"error": "image 0 is a truncated PNG file (its end marker is missing)"}
    assert len(fake_upstream.predict_requests) == 1, "a truncated image never reaches the model"


def test_tf_serving_grpc_predict_serves_tiff_like_predict() -> None:
    import asyncio

    from tests.service.gateway.in_process import fake_and_gateway, tf_serving_request
    from tlserve.protocol import prediction_service_pb2_grpc

    async def scenario() -> None:
        async with fake_and_gateway() as (_, channel, fake, _servicer):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = await stub.Predict(tf_serving_request([tiff()]), timeout=10)
            (sent,) = fake.predict_requests[0].inputs["image_bytes"].string_val
            assert sent.startswith(b"\x89PNG")
            assert response.outputs["classes"].string_val[0].decode() == image_label(sent)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(tf_serving_request([tiff()[:40]]), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == "image 0 is a TIFF that could not be decoded (truncated or corrupt)"

    asyncio.run(scenario())


def flat_tiff(side: int) -> bytes:
    """One colour, LZW: 36 Mpx (side 6000) in about 1.4 MB, about a second of decoding and PNG encoding."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, "TIFF", compression="tiff_lzw")
    return buffer.getvalue()


def test_tiffs_over_the_pixel_budget_are_refused_from_their_headers_before_any_conversion(
    make_client, fake_upstream, monkeypatch
):
    converted = []
    monkeypatch.setattr(image_formats, "tiff_to_png", lambda data, **_: converted.append(data))
    client = make_client(max_request_pixels=15_000)
    files = [("files", (f"{index}.tif", flat_tiff(100), "image/tiff")) for index in range(2)]
    response = client.post("/predict", files=files)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith(
        "the request's images decode to 20000 pixels, more than the per-request budget of 15000"
    )
    assert converted == []
    assert fake_upstream.predict_requests == []


def multipart_in_chunks(name: str, data: bytes, uploaded: asyncio.Event) -> tuple[dict[str, str], AsyncIterator]:
    """A one-file /predict multipart body sent in 64 KiB chunks; `uploaded` is set once the last one is written."""
    boundary = "tlserve-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/tiff\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]
        uploaded.set()  # httpx asks for the next chunk only after writing the last one

    return {"content-type": f"multipart/form-data; boundary={boundary}"}, chunks()


def test_healthz_keeps_answering_while_a_big_tiff_is_converted():
    # Pillow releases the GIL while it decodes and encodes: in a thread, the conversion leaves the loop free
    # (hundreds of probes here). On the loop, a 36 Mpx TIFF held every other request for about a second: only the
    # few probes that fit around the upstream call got in (8).
    tiff = flat_tiff(6000)

    async def scenario():
        async with fake_and_gateway() as (ports, _channel, _fake, _servicer), http_client(ports) as client:
            await client.get("/healthz")
            uploaded = asyncio.Event()
            headers, content = multipart_in_chunks("scan.tif", tiff, uploaded)
            answer = asyncio.create_task(client.post("/predict", content=content, headers=headers))
            await uploaded.wait()
            probes = 0
            while not answer.done():
                assert (await client.get("/healthz")).status_code == 200
                probes += 1
            return await answer, probes

    response, probes = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert probes >= 100, f"only {probes} /healthz answers while the TIFF was converted"

"""Serving benchmark (issue 3): gateway overhead, batching gain, efficiency and bytes on the wire, in one run.

One small model (VGG16, weights=None, at --image-size), real processes on loopback: a standalone
`tlserve model-server` and two `tlserve serve --upstream` gateways (micro-batching on / off). Prints a Markdown
table for docs/BENCHMARKS.md ("Serving") and writes the raw numbers as JSON. Nothing is asserted here.

    .venv/bin/python bench/serve_bench.py [--models-dir models --model demo] [--out serve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"gateway_overhead": ("<=", 1.10), "batching_gain": (">=", 2.0), "efficiency": (">=", 0.85)}
TARGETS["bytes_ratio"] = (">=", 20.0)


# ---------------------------------------------------------------- inputs


def photo_like_jpeg(size: int, seed: int) -> bytes:
    """A smooth gradient with a few shapes and mild noise: compresses like a photo, unlike pure noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None] * rng.uniform(60, 200, 3) + rng.uniform(0, 50, 3)
    pixels = np.broadcast_to(ramp, (size, size, 3)) + rng.normal(0, 4, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, size * 3 // 4, 2)
        extent = int(rng.integers(size // 8, size // 3))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([int(x), int(y), int(x) + extent, int(y) + extent], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def export_small_model(models_dir: Path, name: str, image_size: int) -> None:
    """VGG16 (weights=None: no hub downloads here) + pooling head, published as version 1."""
    import keras

    from training.export import ExportSpec, export_saved_model
    from training.preprocessing import preprocess_pixels

    keras.utils.set_random_seed(0)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Lambda(lambda t: preprocess_pixels("vgg16", t))(inputs)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    out = models_dir / name / "1"
    out.mkdir(parents=True)
    spec = ExportSpec(classes=("circle", "square", "triangle"), image_size=image_size, base="vgg16")
    export_saved_model(model, spec, out, warmup_images=[photo_like_jpeg(96, seed) for seed in range(3)])


# ---------------------------------------------------------------- measurements


class RawModel:
    """The SavedModel's serving_default called in this process: the ceiling a server can approach."""

    def __init__(self, version_dir: Path, images: Sequence[bytes]) -> None:
        import tensorflow as tf

        self._tf = tf
        self._predict = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        self._images = images

    def throughput(self, batch_size: int, rounds: int) -> float:
        """Images/s over `rounds` calls of `batch_size` images (after one untimed call that traces the shape)."""
        batch = self._tf.constant([self._images[i % len(self._images)] for i in range(batch_size)])
        self._predict(image_bytes=batch)
        started = time.perf_counter()
        for _ in range(rounds):
            self._predict(image_bytes=batch)["probabilities"].numpy()
        return batch_size * rounds / (time.perf_counter() - started)


def saturation_rounds(
    args: argparse.Namespace, images: Sequence[bytes], url_on: str, url_off: str, raw: RawModel, best_batch: int
) -> dict[str, list[float]]:
    """Batching on, off and the raw model in alternation, so shifting background load hits all three alike."""
    rounds: dict[str, list[float]] = {"batching_on": [], "batching_off": [], "raw_best_batch": []}
    concurrent_throughput(url_on, images, args.clients, 1)  # warm-up
    concurrent_throughput(url_off, images, args.clients, 1)
    client_cpu_s = 0.0
    for _ in range(args.rounds):
        started_cpu = time.process_time()
        rounds["batching_on"].append(concurrent_throughput(url_on, images, args.clients, args.requests_per_client))
        rounds["batching_off"].append(concurrent_throughput(url_off, images, args.clients, args.requests_per_client))
        client_cpu_s += time.process_time() - started_cpu  # this process as the HTTP client, not the raw model
        rounds["raw_best_batch"].append(raw.throughput(best_batch, args.raw_rounds))
    rounds["client_cpu_seconds"] = [client_cpu_s]
    return rounds


def interleaved_latencies(calls: dict[str, Callable[[], object]], count: int) -> dict[str, list[float]]:
    """Alternate the calls so background load on the shared machine hits each path equally."""
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            latencies[name].append(time.perf_counter() - started)
    return latencies


def concurrent_throughput(url: str, images: Sequence[bytes], clients: int, requests_per_client: int) -> float:
    """Images/s when `clients` callers each send `requests_per_client` one-image /predict requests back to back."""
    import httpx

    async def one_client(http: httpx.AsyncClient, offset: int) -> None:
        for index in range(requests_per_client):
            image = images[(offset + index) % len(images)]
            response = await http.post("/predict", files=[("files", ("x.jpg", image, "image/jpeg"))])
            response.raise_for_status()

    async def run() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            # Open every connection first, so connection setup is not timed.
            await asyncio.gather(*(http.get("/healthz") for _ in range(clients)))
            started = time.perf_counter()
            await asyncio.gather(*(one_client(http, n) for n in range(clients)))
            return clients * requests_per_client / (time.perf_counter() - started)

    return asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to see who used the 2 shared cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mean_batch_size(metrics_after: str, metrics_before: str) -> float:
    """Images per upstream Predict between two scrapes of the gateway's tlserve_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    def totals(text: str) -> tuple[float, float]:
        found = {"tlserve_batch_size_sum": 0.0, "tlserve_batch_size_count": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in found:
                    found[sample.name] += sample.value
        return found["tlserve_batch_size_sum"], found["tlserve_batch_size_count"]

    (images_after, batches_after), (images_before, batches_before) = totals(metrics_after), totals(metrics_before)
    return (images_after - images_before) / max(batches_after - batches_before, 1.0)


def wire_bytes(image: bytes, image_size: int) -> dict[str, int]:
    """Request bodies for one image: TF Serving float JSON (what a Keras-default signature needs) vs tlserve's."""
    import httpx
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB").resize((image_size, image_size)), np.float32)
    float_json = json.dumps({"instances": [pixels.tolist()]}).encode()
    multipart = httpx.Request("POST", "http://x/predict", files=[("files", ("x.jpg", image, "image/jpeg"))])
    return {"tf_serving_float_json": len(float_json), "tlserve_multipart": len(multipart.read())}


# ---------------------------------------------------------------- run


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import grpc
    import httpx

    from service.client import GRPC_OPTIONS, predict_request
    from tests.support.gateway import running_serve
    from tests.support.modelserver import ModelServerProcess
    from tlserve.processes import free_port

    models_dir = args.models_dir or workdir / "models"
    if args.models_dir is None:
        export_small_model(models_dir, args.model, args.image_size)
    from tlserve.contract import list_versions

    version_dir = models_dir / args.model / str(max(list_versions(models_dir / args.model)))
    image_size = json.loads((version_dir / "assets.extra" / "metadata.json").read_text())["image_size"]
    images = [photo_like_jpeg(args.photo_size, seed) for seed in range(64)]
    results: dict[str, Any] = {"model": args.model, "image_size": image_size, "photo_size": args.photo_size}

    print("raw in-process throughput per batch size ...", file=sys.stderr)
    raw = RawModel(version_dir, images)
    results["raw_images_per_s"] = {size: raw.throughput(size, args.raw_rounds) for size in args.batch_sizes}
    best_batch = max(results["raw_images_per_s"], key=results["raw_images_per_s"].get)
    results["raw_best_batch_size"] = best_batch

    server = ModelServerProcess(models_dir, free_port(), workdir / "model-server.log")
    server.start()
    try:
        # The default configuration (default_label=stable, absent here): one probe per 5 s, not one per image.
        env = {"TLSERVE_DEFAULT_MODEL": args.model, "TLSERVE_MAX_BATCH_SIZE": str(args.max_batch_size)}
        if args.batch_wait_timeout_s is not None:
            env |= {"TLSERVE_BATCH_WAIT_TIMEOUT_S": str(args.batch_wait_timeout_s)}
        with (
            running_serve(upstream=server.target, env=env, log_path=workdir / "on.log") as gateway_on,
            running_serve(
                upstream=server.target, env=env | {"TLSERVE_BATCHING_ENABLED": "false"}, log_path=workdir / "off.log"
            ) as gateway_off,
            grpc.insecure_channel(server.target, options=GRPC_OPTIONS) as channel,
            grpc.insecure_channel(gateway_off.grpc_target, options=GRPC_OPTIONS) as gateway_channel,
            httpx.Client(base_url=gateway_on.http_url, timeout=60) as http_on,
            httpx.Client(base_url=gateway_off.http_url, timeout=60) as http_off,
        ):
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            gateway_stub = prediction_service_pb2_grpc.PredictionServiceStub(gateway_channel)
            request = predict_request(args.model, [images[0]])
            files = [("files", ("x.jpg", images[0], "image/jpeg"))]
            calls = {
                "direct_grpc": lambda: stub.Predict(request, timeout=60),
                "gateway_batching_on": lambda: http_on.post("/predict", files=files).raise_for_status(),
                "gateway_batching_off": lambda: http_off.post("/predict", files=files).raise_for_status(),
                # The same proxy hop without HTTP/multipart/JSON: separates the HTTP stack from the extra hop.
                "gateway_grpc_batching_off": lambda: gateway_stub.Predict(request, timeout=60),
            }
            print("single-image latency ...", file=sys.stderr)
            interleaved_latencies(calls, 10)  # warm up every path
            latencies = interleaved_latencies(calls, args.latency_requests)
            results["p50_ms"] = {name: 1000 * statistics.median(values) for name, values in latencies.items()}
            results["gateway_overhead_batching_off"] = (
                results["p50_ms"]["gateway_batching_off"] / results["p50_ms"]["direct_grpc"]
            )

            print("concurrent throughput, interleaved with the raw model ...", file=sys.stderr)
            before = http_on.get("/metrics").text
            pids = {"model_server": server.process.pid, "gateway_on": gateway_on.process.pid}
            pids["gateway_off"] = gateway_off.process.pid
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            urls = (gateway_on.http_url, gateway_off.http_url)
            results["rounds"] = saturation_rounds(args, images, *urls, raw, best_batch)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            results["served_cpu_seconds"] = cpu | {"bench_client": results["rounds"].pop("client_cpu_seconds")[0]}
            results["mean_batch_size_on"] = mean_batch_size(http_on.get("/metrics").text, before)
    finally:
        server.stop()

    results["bytes"] = {"model_size": wire_bytes(images[0], image_size), "224px": wire_bytes(images[0], 224)}
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The four issue-3 measures; throughput ratios are medians of per-round ratios (robust to load drift)."""
    p50, rounds = results["p50_ms"], results["rounds"]
    on, off, raw = rounds["batching_on"], rounds["batching_off"], rounds["raw_best_batch"]
    wire = results["bytes"]["224px"]
    return {
        # The gateway as deployed (micro-batching on, the default); the batching-off ratio is in the raw JSON.
        "gateway_overhead": p50["gateway_batching_on"] / p50["direct_grpc"],
        "batching_gain": statistics.median(a / b for a, b in zip(on, off, strict=True)),
        "efficiency": statistics.median(max(a, b) / c for a, b, c in zip(on, off, raw, strict=True)),
        "bytes_ratio": wire["tf_serving_float_json"] / wire["tlserve_multipart"],
    }


def markdown(results: dict[str, Any], measured: dict[str, float]) -> str:
    lines = ["| measure | value | target | met |", "|---|---|---|---|"]
    for name, value in measured.items():
        op, target = TARGETS[name]
        met = value <= target if op == "<=" else value >= target
        lines.append(f"| {name} | {value:.3f} | {op} {target} | {'yes' if met else 'NO'} |")
    return "\n".join(lines) + "\n\n```json\n" + json.dumps(results, indent=2, default=str) + "\n```"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None, help="serve this repository (default: build one)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--image-size", type=int, default=64, help="input size of the model built when no --models-dir")
    parser.add_argument("--photo-size", type=int, default=224, help="side of the JPEGs sent")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--raw-rounds", type=int, default=10)
    parser.add_argument("--latency-requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="alternations of batching on / off / raw model")
    parser.add_argument("--max-batch-size", type=int, default=32, help="gateway micro-batching, batching-on run")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=None, help="default: the gateway's own")
    parser.add_argument("--out", type=Path, default=None, help="also write the raw numbers here (JSON)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))  # tests.support (process helpers) lives beside the packages
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as workdir:
        results = run(args, Path(workdir))
    measured = ratios(results)
    results["ratios"] = measured
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results, measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())

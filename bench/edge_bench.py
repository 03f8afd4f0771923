"""Edge benchmark (issue 12): the memory-amplification request and the 32 MB over-rows body, before and after.

Real processes on loopback: a `tlserve model-server` (a small VGG16, weights=None) and a `tlserve serve --upstream`.
1. Amplification: one gRPC Predict with 32 highly compressible 6000x6000 PNGs (36 Mpx each, under the per-image
   limit) sent straight to the model server, once with the pixel budgets switched off (the old behaviour) and once
   with the defaults. Reports status, seconds, and the server's peak-RSS growth (VmHWM after - VmRSS before).
2. Event loop: a ~32 MB `/v1/models/{m}:predict` body of pixel values with more rows than the limit, while
   `/healthz` is probed every 10 ms; also a within-limit ~23 MB body that is parsed and converted in full. Both on
   two gateways: JSON conversion in-process (`TLSERVE_JSON_OFFLOAD_WORKERS=0`, the behaviour before the worker
   pool) and with the default worker pool; plus the latency of small bodies either side of the offload threshold.
Prints a Markdown table for docs/BENCHMARKS.md and writes the raw numbers as JSON. Nothing is asserted here.

    .venv/bin/python bench/edge_bench.py [--out edge.json] [--skip-amplification]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))
NO_BUDGET = str(10**15)


def compressible_png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def amplification(
    models_dir: Path, workdir: Path, model: str, budget_args: Sequence[str], label: str
) -> dict[str, Any]:
    """One attack request against a fresh model server; its status, seconds and peak-RSS growth."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from service.client import GRPC_OPTIONS, predict_request
    from tests.support.modelserver import ModelServerProcess
    from tlserve.processes import free_port

    png = compressible_png(6000)
    request = predict_request(model, [png] * 32)
    server = ModelServerProcess(models_dir, free_port(), workdir / f"ms-{label}.log", extra_args=budget_args)
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        before = memory_kib(pid)
        with grpc.insecure_channel(server.target, options=GRPC_OPTIONS) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            started = time.perf_counter()
            try:
                stub.Predict(request, timeout=60)
                status = "OK"
            except grpc.RpcError as exc:
                status = f"{exc.code().name}: {exc.details()[:90]}"
            seconds = time.perf_counter() - started
        after = memory_kib(pid)
    finally:
        server.stop()
    return {
        "request_mb": request.ByteSize() / 1e6,
        "status": status,
        "seconds": seconds,
        "rss_before_mb": before["VmRSS"] / 1024,
        "peak_growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
    }


def via_gateway(http_url: str, model_server_pid: int) -> dict[str, Any]:
    """The attack as `/predict` multipart through the gateway: status, seconds, model-server peak-RSS growth."""
    import httpx

    png = compressible_png(6000)
    files = [("files", (f"{index}.png", png, "image/png")) for index in range(32)]
    before = memory_kib(model_server_pid)
    with httpx.Client(base_url=http_url, timeout=60) as client:
        started = time.perf_counter()
        response = client.post("/predict", files=files)
        seconds = time.perf_counter() - started
    after = memory_kib(model_server_pid)
    return {
        "request_mb": 32 * len(png) / 1e6,
        "status": f"{response.status_code}: {response.text[:110]}",
        "seconds": seconds,
        "rss_before_mb": before["VmRSS"] / 1024,
        "peak_growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
    }


def pixel_body(rows: int, side: int, *, refused_at_the_end: bool = False) -> bytes:
    """Rows of pixel values; `refused_at_the_end` makes the last value 256, so that the gateway converts the whole
    body and then answers 400 itself (the conversion alone is measured, no upstream call)."""
    row = np.full((side, side, 3), 128, np.uint8).tolist()
    rows_list = [row] * rows
    if refused_at_the_end:
        last = np.full((side, side, 3), 128, np.uint16)
        last[-1, -1, -1] = 256
        rows_list = [*rows_list[:-1], last.tolist()]
    body = {"signature_name": "predict_pixels", "instances": rows_list}
    return json.dumps(body, separators=(",", ":")).encode()


def small_body_latency(http_url: str, model: str, body: bytes, requests: int = 40) -> dict[str, Any]:
    """Median and p90 seconds of `requests` sequential posts of a small body (after two warm-up posts)."""
    import httpx

    seconds = []
    with httpx.Client(base_url=http_url, timeout=60) as client:
        for index in range(requests + 2):
            started = time.perf_counter()
            response = client.post(
                f"/v1/models/{model}:predict", content=body, headers={"content-type": "application/json"}
            )
            if index >= 2:
                seconds.append(time.perf_counter() - started)
    return {
        "body_kb": len(body) / 1e3,
        "status": response.status_code,
        "p50_ms": 1000 * float(np.median(seconds)),
        "p90_ms": 1000 * float(np.percentile(seconds, 90)),
    }


def event_loop(http_url: str, model: str) -> dict[str, Any]:
    """The big bodies while /healthz is probed, and small bodies either side of the offload threshold."""
    print("  32 MB over-rows body ...", file=sys.stderr)
    results = {"over_rows": asyncio.run(body_while_probing(http_url, model, pixel_body(90, 160)))}
    print("  within-limit body, converted in full ...", file=sys.stderr)
    results["within_limit"] = asyncio.run(body_while_probing(http_url, model, pixel_body(64, 160)))
    print("  small bodies ...", file=sys.stderr)
    results["small_64px"] = small_body_latency(http_url, model, pixel_body(1, 64, refused_at_the_end=True))
    results["small_224px"] = small_body_latency(http_url, model, pixel_body(1, 224, refused_at_the_end=True))
    return results


async def body_while_probing(http_url: str, model: str, body: bytes) -> dict[str, Any]:
    """Send `body` while /healthz is probed every 10 ms; the body's status and seconds, the probes' worst latency."""
    import httpx

    async with (
        httpx.AsyncClient(base_url=http_url, timeout=60) as probe,
        httpx.AsyncClient(base_url=http_url, timeout=60) as sender,
    ):
        await probe.get("/healthz")
        await sender.get("/healthz")  # both connections open before the measurement
        latencies: list[float] = []
        done = asyncio.Event()

        async def probing() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await probe.get("/healthz")
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probing())
        started = time.perf_counter()
        response = await sender.post(
            f"/v1/models/{model}:predict", content=body, headers={"content-type": "application/json"}
        )
        seconds = time.perf_counter() - started
        await asyncio.sleep(0.05)
        done.set()
        await prober
    return {
        "body_mb": len(body) / 1e6,
        "status": response.status_code,
        "message": response.text[:120],
        "seconds": seconds,
        "healthz_max_ms": 1000 * max(latencies),
        "healthz_probes": len(latencies),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from serve_bench import export_small_model

    from tests.support.gateway import running_serve
    from tests.support.modelserver import ModelServerProcess
    from tlserve.processes import free_port

    models_dir = workdir / "models"
    export_small_model(models_dir, args.model, args.image_size)
    results: dict[str, Any] = {}
    if not args.skip_amplification:
        print("amplification, budgets off ...", file=sys.stderr)
        off = ["--max-request-pixels", NO_BUDGET, "--max-inflight-pixels", NO_BUDGET]
        results["amplification_budget_off"] = amplification(models_dir, workdir, args.model, off, "off")
        print("amplification, default budgets ...", file=sys.stderr)
        results["amplification_default"] = amplification(models_dir, workdir, args.model, [], "default")

    server = ModelServerProcess(models_dir, free_port(), workdir / "ms.log")
    server.start()
    try:
        env = {"TLSERVE_DEFAULT_MODEL": args.model, "TLSERVE_DEFAULT_LABEL": ""}
        for mode, workers in (("in_process", "0"), ("offloaded", None)):
            mode_env = env if workers is None else {**env, "TLSERVE_JSON_OFFLOAD_WORKERS": workers}
            log_path = workdir / f"gateway-{mode}.log"
            with running_serve(upstream=server.target, env=mode_env, log_path=log_path) as gateway:
                if mode == "offloaded" and not args.skip_amplification:
                    print("amplification through the gateway ...", file=sys.stderr)
                    assert server.process is not None
                    results["amplification_via_gateway"] = via_gateway(gateway.http_url, server.process.pid)
                print(f"JSON conversion {mode.replace('_', '-')} ...", file=sys.stderr)
                results[mode] = event_loop(gateway.http_url, args.model)
    finally:
        server.stop()
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| measure | status | seconds | other |",
        "|---|---|---|---|",
    ]
    for key in ("amplification_budget_off", "amplification_default", "amplification_via_gateway"):
        if key not in results:
            continue
        item = results[key]
        lines.append(
            f"| {key} ({item['request_mb']:.1f} MB request) | {item['status']} | {item['seconds']:.2f} | "
            f"model-server peak RSS growth {item['peak_growth_mb']:.0f} MB (from {item['rss_before_mb']:.0f} MB) |"
        )
    for mode in ("in_process", "offloaded"):
        for key in ("over_rows", "within_limit"):
            item = results[mode][key]
            lines.append(
                f"| {mode}: {key} ({item['body_mb']:.1f} MB body) | {item['status']} | {item['seconds']:.2f} | "
                f"/healthz worst {item['healthz_max_ms']:.0f} ms over {item['healthz_probes']} probes |"
            )
        for key in ("small_64px", "small_224px"):
            item = results[mode][key]
            lines.append(
                f"| {mode}: {key} ({item['body_kb']:.0f} KB body) | {item['status']} | "
                f"p50 {item['p50_ms']:.1f} ms | p90 {item['p90_ms']:.1f} ms |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-amplification", action="store_true", help="only the event-loop measurements")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tlserve-edge-bench-") as workdir:
        results = run(args, Path(workdir))
    print(markdown(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

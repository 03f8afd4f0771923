"""Thin-side benchmark (issue 8): what the gateway, the client and the promotion CLI cost without TensorFlow.

Runs the same measurements against two code trees in one run, on one model server: BEFORE (--before, default
08bbb82, the commit before the change) and AFTER (--after, default HEAD), each extracted with `git archive` into
a scratch directory where Python may write its bytecode caches (as an installed package has them). Per tree: the
gateway's start → /healthz (wall and its own CPU), its RSS after 100 predictions and whether it maps a TensorFlow
file, `tlserve predict --grpc` (one image), `tlserve models list` and `tlserve promote` of an unknown version
(wall and CPU, medians of 3); then the serving ratios of bench/serve_bench.py (p50 `/predict` ÷ direct gRPC,
batching on ÷ off), every path interleaved so load on the shared machine hits both trees alike. Prints Markdown
for docs/BENCHMARKS.md; nothing is asserted.

    .venv/bin/python bench/thin_bench.py [--before 08bbb82] [--after HEAD] [--out thin.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]

import httpx  # noqa: E402
import serve_bench  # noqa: E402

from tests.support.modelserver import ModelServerProcess  # noqa: E402
from tlserve.processes import LOOPBACK, free_ports  # noqa: E402

MODEL = "demo"
MEASURES = [
    f"{name}{unit}"
    for name in ("healthz", "predict_grpc", "models_list", "promote_unknown")
    for unit in ("_s", "_cpu_s")
]


def extract(revision: str, target: Path) -> Path:
    """The repository at `revision`, as files (no .git), in `target`."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", revision], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def tree_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Run `python -m tlserve` from `tree`, writing bytecode caches there (the first run warms them)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return env | (extra or {})


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tlserve(tree: Path, *args: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall s, CPU s, result) of one `python -m tlserve ...` from `tree`."""
    started, started_cpu = time.perf_counter(), children_cpu_s()
    done = subprocess.run(
        [sys.executable, "-m", "tlserve", *args], env=tree_env(tree), capture_output=True, text=True, timeout=300
    )
    return time.perf_counter() - started, children_cpu_s() - started_cpu, done


@contextlib.contextmanager
def gateway(tree: Path, upstream: str, log: Path, extra: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """`tlserve serve --upstream` from `tree`; yields its ports, pid and seconds from spawn to /healthz 200."""
    http_port, grpc_port = free_ports(2)
    command = [sys.executable, "-m", "tlserve", "serve", "--upstream", upstream]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = tree_env(tree, {"TLSERVE_DEFAULT_MODEL": MODEL} | (extra or {}))
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{http_port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.01)
        healthz_s = time.perf_counter() - started
        yield {
            "url": url,
            "grpc": f"{LOOPBACK}:{grpc_port}",
            "pid": process.pid,
            "healthz_s": healthz_s,
            "healthz_cpu_s": serve_bench.cpu_seconds(process.pid),
        }
    finally:
        process.terminate()
        process.wait(30)


def memory(pid: int) -> dict[str, Any]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    maps = Path(f"/proc/{pid}/maps").read_text()
    tf_libraries = sorted({line.split()[-1] for line in maps.splitlines() if "tensorflow" in line.split()[-1]})
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
        "tensorflow_files_mapped": len(tf_libraries),
    }


def measure_tree(tree: Path, server: ModelServerProcess, models_dir: Path, image: Path, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {key: [] for key in MEASURES}
    for attempt in range(3):
        with gateway(tree, server.target, work / f"start-{attempt}.log") as started:
            result["healthz_s"].append(started["healthz_s"])
            result["healthz_cpu_s"].append(started["healthz_cpu_s"])
    with gateway(tree, server.target, work / "rss.log") as running, httpx.Client(timeout=60) as http:
        files = [("files", ("x.jpg", image.read_bytes(), "image/jpeg"))]
        for _ in range(100):
            http.post(running["url"] + "/predict", files=files).raise_for_status()
        result["after_100_predictions"] = memory(running["pid"])
        for _ in range(3):
            seconds, cpu, done = tlserve(tree, "predict", str(image), "--grpc", running["grpc"], "--model", MODEL)
            assert done.returncode == 0, done.stderr
            result["predict_grpc_s"].append(seconds)
            result["predict_grpc_cpu_s"].append(cpu)
    for _ in range(3):
        seconds, cpu, done = tlserve(tree, "models", "list", "--models-dir", str(models_dir))
        assert done.returncode == 0, done.stderr
        result["models_list_s"].append(seconds)
        result["models_list_cpu_s"].append(cpu)
        target = ["--models-dir", str(models_dir), "--server", server.target]
        seconds, cpu, done = tlserve(tree, "promote", MODEL, "99", *target)
        result["promote_unknown_s"].append(seconds)
        result["promote_unknown_cpu_s"].append(cpu)
        result["promote_unknown_answer"] = [done.returncode, done.stderr.strip().splitlines()[-1]]
    for key in MEASURES:
        result[key + "_median"] = statistics.median(result[key])
    return result


def serving_ratios(trees: dict[str, Path], server: ModelServerProcess, args: argparse.Namespace, work: Path) -> Any:
    """serve_bench's (a) and (b) for both trees, every path interleaved in the same loop."""
    import grpc

    from tlserve.protocol import predict_pb2, prediction_service_pb2_grpc, types_pb2

    images = [serve_bench.photo_like_jpeg(224, seed) for seed in range(64)]
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, tree in trees.items():
            for batching in ("on", "off"):
                extra = {"TLSERVE_BATCHING_ENABLED": "true" if batching == "on" else "false"}
                started = stack.enter_context(gateway(tree, server.target, work / f"{name}-{batching}.log", extra))
                urls[f"{name}_batching_{batching}"] = started["url"]
        channel = stack.enter_context(grpc.insecure_channel(server.target))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.signature_name = "serving_default"
        request.inputs["image_bytes"].dtype = types_pb2.DT_STRING
        request.inputs["image_bytes"].tensor_shape.dim.add(size=1)
        request.inputs["image_bytes"].string_val.append(images[0])
        files = [("files", ("x.jpg", images[0], "image/jpeg"))]
        clients = {key: stack.enter_context(httpx.Client(base_url=url, timeout=60)) for key, url in urls.items()}
        calls: dict[str, Any] = {"direct_grpc": lambda: stub.Predict(request, timeout=60)}
        for key, client in clients.items():
            calls[key] = lambda client=client: client.post("/predict", files=files).raise_for_status()
        serve_bench.interleaved_latencies(calls, 10)
        latencies = serve_bench.interleaved_latencies(calls, args.latency_requests)
        p50 = {key: 1000 * statistics.median(values) for key, values in latencies.items()}
        throughput: dict[str, list[float]] = {key: [] for key in urls}
        for url in urls.values():
            serve_bench.concurrent_throughput(url, images, args.clients, 1)  # warm-up
        for _ in range(args.rounds):
            for key, url in urls.items():
                throughput[key].append(serve_bench.concurrent_throughput(url, images, args.clients, 4))
    ratios = {}
    for name in trees:
        on, off = throughput[f"{name}_batching_on"], throughput[f"{name}_batching_off"]
        ratios[name] = {
            "overhead_batching_on": p50[f"{name}_batching_on"] / p50["direct_grpc"],
            "overhead_batching_off": p50[f"{name}_batching_off"] / p50["direct_grpc"],
            "batching_gain": statistics.median(a / b for a, b in zip(on, off, strict=True)),
        }
    return {"p50_ms": p50, "images_per_s": throughput, "ratios": ratios}


def markdown(results: dict[str, Any]) -> str:
    before, after = results["before"], results["after"]
    rows = [
        ("gateway start → /healthz, wall s", "healthz_s_median", "≤ 1.5"),
        ("gateway start → /healthz, the gateway's CPU s", "healthz_cpu_s_median", ""),
        ("`tlserve predict --grpc` one image, wall s", "predict_grpc_s_median", "≤ 1"),
        ("`tlserve predict --grpc` one image, CPU s", "predict_grpc_cpu_s_median", ""),
        ("`tlserve models list`, wall s", "models_list_s_median", "≤ 0.5"),
        ("`tlserve models list`, CPU s", "models_list_cpu_s_median", ""),
        ("`tlserve promote` unknown version, wall s", "promote_unknown_s_median", "≤ 1"),
        ("`tlserve promote` unknown version, CPU s", "promote_unknown_cpu_s_median", ""),
    ]
    lines = ["| measure | before | after | target |", "|---|---|---|---|"]
    memory_before, memory_after = before["after_100_predictions"], after["after_100_predictions"]
    lines.append(
        f"| gateway RSS after 100 predictions, MB | {memory_before['rss_mb']:.0f} | "
        f"{memory_after['rss_mb']:.0f} | ≤ 150 |"
    )
    lines.append(
        f"| TensorFlow files mapped by the gateway | {memory_before['tensorflow_files_mapped']} | "
        f"{memory_after['tensorflow_files_mapped']} | 0 |"
    )
    lines += [f"| {label} | {before[key]:.2f} | {after[key]:.2f} | {target} |" for label, key, target in rows]
    serving = results["serving"]["ratios"]
    for key, label in (
        ("overhead_batching_on", "p50 `/predict` ÷ p50 direct gRPC, batching on"),
        ("overhead_batching_off", "p50 `/predict` ÷ p50 direct gRPC, batching off"),
        ("batching_gain", "images/s batching on ÷ off (median of rounds)"),
    ):
        lines.append(f"| {label} | {serving['before'][key]:.2f} | {serving['after'][key]:.2f} | not worse |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", default="08bbb82", help="git revision to compare with (default: before issue 8)")
    parser.add_argument("--after", default="HEAD", help="git revision measured (default HEAD: commit first)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--latency-requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="thin-bench-") as scratch:
        work = Path(scratch)
        trees = {name: extract(getattr(args, name), work / name) for name in ("before", "after")}
        models_dir = work / "models"
        serve_bench.export_small_model(models_dir, MODEL, args.image_size)
        image = work / "photo.jpg"
        image.write_bytes(serve_bench.photo_like_jpeg(224, 0))
        server = ModelServerProcess(models_dir, free_ports(1)[0], work / "model-server.log")
        server.start()
        try:
            results: dict[str, Any] = {"revisions": [args.before, args.after], "load_before": os.getloadavg()}
            for name in ("before", "after", "before", "after"):  # twice, alternating; the second pass is kept
                print(f"{name}: start, memory, commands ...", file=sys.stderr)
                results[name] = measure_tree(trees[name], server, models_dir, image, work)
            print("serving ratios, both trees interleaved ...", file=sys.stderr)
            results["serving"] = serving_ratios(trees, server, args, work)
            results["load_after"] = os.getloadavg()
        finally:
            server.stop()
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results) + "\n\n```json\n" + json.dumps(results, indent=2, default=str) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak benchmark (issue 12): is throughput flat over identical runs, and does either process grow?

One `tlserve serve` with its embedded model server (as deployed on a laptop/CI) over one small model (VGG16,
weights=None, at --image-size), loopback only. `--runs` identical runs of `--seconds` each: `--clients` concurrent
async HTTP clients send one-image `/predict` requests back to back (closed loop, bounded by time). Per run it
records requests/s, errors, RSS and CPU seconds of the gateway and of the model server, and how much CPU the rest of
the machine used meanwhile (from /proc/stat), so a decline can be told apart from someone else's load.
Prints a Markdown table for docs/BENCHMARKS.md ("Soak") and writes the raw numbers as JSON. Nothing is asserted.

Uses only the project's Python environment (httpx is a dependency); no load generator to install.

    .venv/bin/python bench/soak_bench.py [--runs 10 --seconds 30 --clients 16] [--out soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle (user, nice, system, irq, softirq, steal) since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def model_server_pid(gateway_pid: int) -> int:
    tasks = Path(f"/proc/{gateway_pid}/task").iterdir()
    (child,) = {int(part) for task in tasks for part in (task / "children").read_text().split()}
    return child


def load_for(url: str, images: Sequence[bytes], clients: int, seconds: float) -> tuple[int, int]:
    """(successful, failed) one-image /predict requests of `clients` closed-loop clients within `seconds`."""
    import httpx

    async def one_client(http: httpx.AsyncClient, offset: int, stop_at: float, counts: list[int]) -> None:
        index = offset
        while time.monotonic() < stop_at:
            image = images[index % len(images)]
            index += 1
            try:
                response = await http.post("/predict", files=[("files", ("x.jpg", image, "image/jpeg"))])
                counts[0 if response.status_code == 200 else 1] += 1
            except httpx.HTTPError:
                counts[1] += 1

    async def run() -> tuple[int, int]:
        counts = [0, 0]
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            await asyncio.gather(*(http.get("/healthz") for _ in range(clients)))
            stop_at = time.monotonic() + seconds
            await asyncio.gather(*(one_client(http, n, stop_at, counts) for n in range(clients)))
        return counts[0], counts[1]

    return asyncio.run(run())


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.serve_bench import export_small_model, photo_like_jpeg
    from tests.support.gateway import running_serve

    models_dir = workdir / "models"
    export_small_model(models_dir, "demo", args.image_size)
    images = [photo_like_jpeg(args.photo_size, seed) for seed in range(64)]
    runs: list[dict[str, Any]] = []
    with running_serve(models_dir, log_path=workdir / "serve.log") as gateway:
        gateway_pid = gateway.process.pid
        server_pid = model_server_pid(gateway_pid)
        load_for(gateway.http_url, images, args.clients, 5.0)  # warm-up, not reported
        for number in range(1, args.runs + 1):
            before = {
                "gateway_cpu": cpu_seconds(gateway_pid),
                "server_cpu": cpu_seconds(server_pid),
                "client_cpu": time.process_time(),
                "machine": machine_busy_seconds(),
                "load": os.getloadavg()[0],
            }
            started = time.monotonic()
            ok, failed = load_for(gateway.http_url, images, args.clients, args.seconds)
            elapsed = time.monotonic() - started
            ours = {
                "gateway_cpu_s": cpu_seconds(gateway_pid) - before["gateway_cpu"],
                "server_cpu_s": cpu_seconds(server_pid) - before["server_cpu"],
                "client_cpu_s": time.process_time() - before["client_cpu"],
            }
            other_cpu_s = machine_busy_seconds() - before["machine"] - sum(ours.values())
            run = {
                "run": number,
                "requests_per_s": ok / elapsed,
                # Requests per CPU-second of the model server: independent of how much CPU others leave us.
                "requests_per_server_cpu_s": ok / max(ours["server_cpu_s"], 1e-9),
                "errors": failed,
                "gateway_rss_mib": rss_mib(gateway_pid),
                "server_rss_mib": rss_mib(server_pid),
                **ours,
                "other_cores": max(other_cpu_s, 0.0) / elapsed,
                "load_before": before["load"],
                "load_after": os.getloadavg()[0],
            }
            runs.append(run)
            print(json.dumps(run), file=sys.stderr)
    return {"runs": runs, "clients": args.clients, "seconds": args.seconds, "image_size": args.image_size}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| run | requests/s | requests per model-server CPU-s | errors | gateway RSS MiB | model server RSS MiB "
        "| CPU-s gateway / server / client | other load (cores) | load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['run']} | {run['requests_per_s']:.1f} | {_per_cpu(run, results['seconds']):.1f} | {run['errors']} "
            f"| {run['gateway_rss_mib']:.0f} "
            f"| {run['server_rss_mib']:.0f} | {run['gateway_cpu_s']:.1f} / {run['server_cpu_s']:.1f} / "
            f"{run['client_cpu_s']:.1f} | {run['other_cores']:.2f} | {run['load_before']:.2f} → "
            f"{run['load_after']:.2f} |"
        )
    throughputs = [run["requests_per_s"] for run in results["runs"]]
    first, last = results["runs"][0], results["runs"][-1]
    lines.append("")
    lines.append(
        f"requests/s: median {statistics.median(throughputs):.1f}, min {min(throughputs):.1f}, "
        f"max {max(throughputs):.1f}; first → last run {throughputs[0]:.1f} → {throughputs[-1]:.1f}; "
        f"RSS gateway {first['gateway_rss_mib']:.0f} → {last['gateway_rss_mib']:.0f} MiB, "
        f"model server {first['server_rss_mib']:.0f} → {last['server_rss_mib']:.0f} MiB"
    )
    return "\n".join(lines)


def _per_cpu(run: dict[str, Any], seconds: float) -> float:
    """Requests per model-server CPU-second (estimated from requests/s × run length for older JSON files)."""
    if "requests_per_server_cpu_s" in run:
        return float(run["requests_per_server_cpu_s"])
    return float(run["requests_per_s"] * seconds / max(run["server_cpu_s"], 1e-9))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent closed-loop HTTP clients")
    parser.add_argument("--image-size", type=int, default=64, help="input size of the model built for the run")
    parser.add_argument("--photo-size", type=int, default=224, help="side of the JPEGs sent")
    parser.add_argument("--out", type=Path, default=None, help="also write the raw numbers here (JSON)")
    parser.add_argument("--table-from", type=Path, default=None, help="only print the table of this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if args.table_from is not None:  # re-print the table of an earlier run
        print(markdown(json.loads(args.table_from.read_text())))
        return 0
    with tempfile.TemporaryDirectory(prefix="tlserve-soak-") as workdir:
        results = soak(args, Path(workdir))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# `make bench`: every benchmark, one line each; each prints a Markdown table for docs/BENCHMARKS.md.
# Raw numbers (JSON) go to $BENCH_OUT (default: a temporary directory), never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
BENCH_OUT="${BENCH_OUT:-$(mktemp -d -t tlserve-bench-XXXX)}"
echo "raw results: $BENCH_OUT"

echo "== training: original recipe vs tlserve phase 1"
python bench/train_bench.py --images-per-class 200 --image-size 64 --epochs 5 --out "$BENCH_OUT/train.json"

echo "== serving: gateway overhead, batching gain, efficiency, bytes on the wire"
python bench/serve_bench.py --image-size 64 --out "$BENCH_OUT/serve.json"

echo "== soak: 10 x 30 s through tlserve serve (gateway + embedded model server), throughput and RSS per run"
python bench/soak_bench.py --out "$BENCH_OUT/soak.json"

echo "== thin side: gateway/client/promotion without TensorFlow, before (08bbb82) vs after (HEAD)"
python bench/thin_bench.py --out "$BENCH_OUT/thin.json"

echo "== edges: memory-amplification request; big REST bodies vs /healthz, JSON conversion in-process and in a worker"
python bench/edge_bench.py --out "$BENCH_OUT/edge.json"

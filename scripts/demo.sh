#!/usr/bin/env bash
# `make demo`: sample data → train → publish → serve → predict, on the embedded defaults.
# Everything lands under ./demo (data, runs) and ./models (the published version).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DEMO_DIR="${DEMO_DIR:-demo}"
MODELS_DIR="${TLSERVE_MODELS_DIR:-models}"

echo "== 1/2 sample data -> $DEMO_DIR/data"
tlserve data sample "$DEMO_DIR/data" --classes 3 --per-class 60 --size 128 --seed 0

echo "== 2/2 train and publish -> $MODELS_DIR/demo"
tlserve train "$DEMO_DIR/data" --name demo --models-dir "$MODELS_DIR" --image-size 64 --epochs 5 \
  --runs-dir "$DEMO_DIR/runs"

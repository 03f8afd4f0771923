#!/usr/bin/env bash
# `make demo`: sample data → train → publish → serve → predict, on the embedded defaults.
# Everything lands under ./demo (data, runs) and ./models (the published version).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DEMO_DIR="${DEMO_DIR:-demo}"
MODELS_DIR="${TLSERVE_MODELS_DIR:-models}"

echo "== 1/4 sample data -> $DEMO_DIR/data"
tlserve data sample "$DEMO_DIR/data" --classes 3 --per-class 60 --size 128 --seed 0

echo "== 2/4 train and publish -> $MODELS_DIR/demo"
# ImageNet weights first; where they cannot be had (no network, no Keras cache) `tlserve train` refuses with
# exit 2, and the demo then chooses a random base explicitly instead of publishing a silently useless model.
# --promote --offline: a repeated demo serves the version it just trained (later versions are otherwise candidates);
# no server runs yet, so only models.config is rewritten.
train_demo() {
  tlserve train "$DEMO_DIR/data" --name demo --models-dir "$MODELS_DIR" --image-size 64 --epochs 5 \
    --runs-dir "$DEMO_DIR/runs" --weights "$1" --promote --offline
}
TRAIN_ERR="$DEMO_DIR/train-imagenet.err"
mkdir -p "$DEMO_DIR"
if ! train_demo imagenet 2> >(tee "$TRAIN_ERR" >&2); then
  if ! grep -q "ImageNet weights" "$TRAIN_ERR"; then
    cat "$TRAIN_ERR" >&2
    exit 1
  fi
  echo "   ImageNet weights are not available here, so the demo trains on a random VGG16 (--weights none):"
  echo "   its scores are near chance; the demo shows the pipeline. With ImageNet weights the same steps learn."
  train_demo none
fi

# Serving: the gateway on free loopback ports, its embedded model server as a child; stopped on any exit.
read -r HTTP_PORT GRPC_PORT MODEL_SERVER_PORT < <(python - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for sock in socks:
    sock.bind(("127.0.0.1", 0))
print(*(sock.getsockname()[1] for sock in socks))
PY
)
HTTP_URL="http://127.0.0.1:$HTTP_PORT"
SERVE_LOG="$DEMO_DIR/serve.log"
echo "== 3/4 serve $MODELS_DIR: HTTP $HTTP_URL, gRPC 127.0.0.1:$GRPC_PORT (log: $SERVE_LOG)"
tlserve serve --models-dir "$MODELS_DIR" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
  --model-server-port "$MODEL_SERVER_PORT" >"$SERVE_LOG" 2>&1 &
SERVE_PID=$!
stop_serving() {
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true # the gateway drains, then stops its model server
    wait "$SERVE_PID" 2>/dev/null || true
    echo "== stopped the gateway and its model server"
  fi
}
trap stop_serving EXIT
trap 'exit 130' INT TERM

python - "$HTTP_URL" "$SERVE_PID" <<'PY'
import os, sys, time
import httpx
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        if httpx.get(url + "/readyz", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.TransportError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("tlserve serve exited; see the log")
    time.sleep(0.5)
sys.exit("tlserve serve was not ready within 300 s; see the log")
PY
echo "   ready"

SAMPLES=()
for class_dir in "$DEMO_DIR"/data/*/; do
  SAMPLES+=("$(find "$class_dir" -maxdepth 1 -type f | sort | tail -n 1)")
done
echo "== 4/4 predict ${#SAMPLES[@]} sample images (one per class)"
echo "-- over HTTP ($HTTP_URL/predict)"
tlserve predict "${SAMPLES[@]}" --url "$HTTP_URL" --model demo
echo "-- over gRPC (tensorflow.serving.PredictionService at 127.0.0.1:$GRPC_PORT)"
tlserve predict "${SAMPLES[@]}" --grpc "127.0.0.1:$GRPC_PORT" --model demo
echo "-- a few lines of $HTTP_URL/metrics"
python -c 'import sys, httpx; print(httpx.get(sys.argv[1] + "/metrics", timeout=10).text)' "$HTTP_URL" \
  | grep -E '^tlserve_(requests_total|images_total|batch_size_(count|sum)|upstream_duration_seconds_count)' \
  | head -n 12 || true

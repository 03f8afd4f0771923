#!/usr/bin/env bash
# Retrain a model on its grown dataset and promote the candidate only if every gate passes.
# Meant for cron or a Kubernetes CronJob (deploy/k8s/base/retrain-cronjob.yaml runs the same `tlserve retrain`).
#
#   TLSERVE_DATA_DIR=/data TLSERVE_MODEL_NAME=demo scripts/retrain_and_promote.sh [extra tlserve retrain flags]
#
# Environment: TLSERVE_DATA_DIR (required), TLSERVE_MODEL_NAME (default demo), TLSERVE_MODELS_DIR (default models),
# TLSERVE_MODEL_SERVER (the running model server, default localhost:8600, or its replicas comma-separated;
# TLSERVE_ALL_REPLICAS=1 resolves each host to all its addresses, e.g. a headless Service; TLSERVE_OFFLINE=1 when none runs),
# TLSERVE_KEEP_VERSIONS (retention after a promotion, default 5), TLSERVE_TLSERVE (the command, default tlserve).
# Exit codes are tlserve's: 0 promoted (or passed and left as canary), 1 kept back by a gate, 2 error;
# 75 (EX_TEMPFAIL) when another retrain of the same repository is still running.
set -euo pipefail

data_dir="${TLSERVE_DATA_DIR:?set TLSERVE_DATA_DIR to the dataset folder (one sub-folder per class)}"
model_name="${TLSERVE_MODEL_NAME:-demo}"
models_dir="${TLSERVE_MODELS_DIR:-models}"
keep="${TLSERVE_KEEP_VERSIONS:-5}"
tlserve="${TLSERVE_TLSERVE:-tlserve}"

server_args=()
if [[ "${TLSERVE_OFFLINE:-0}" == "1" ]]; then
    server_args=(--offline)
fi

mkdir -p "$models_dir"
# Two overlapping runs would train twice and race for the canary label; the second one gives up at once.
exec 9>"$models_dir/.retrain.lock"
if ! flock --nonblock 9; then
    echo "retrain_and_promote: another retrain of $models_dir is running; skipping" >&2
    exit 75
fi

export TLSERVE_AUDIT_USER="${TLSERVE_AUDIT_USER:-retrain_and_promote@$(hostname)}"
status=0
"$tlserve" retrain "$data_dir" --name "$model_name" --models-dir "$models_dir" \
    --promote-if-better --keep "$keep" "${server_args[@]}" "$@" || status=$?

case "$status" in
    0) echo "retrain_and_promote: $model_name retrained; see $models_dir/audit.jsonl" ;;
    1) echo "retrain_and_promote: candidate kept back by a gate (reason above and in $models_dir/audit.jsonl)" >&2 ;;
    *) echo "retrain_and_promote: retrain failed with exit code $status" >&2 ;;
esac
exit "$status"

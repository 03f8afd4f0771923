#!/bin/bash
# Readiness probe for TF Serving: ready only while some version of model $1 is AVAILABLE.
#
# `GET /v1/models/<name>` answers 200 as soon as TF Serving knows a version, also while it is only LOADING or
# already END (unloaded after a failed load), so an httpGet probe cannot see AVAILABLE; TF Serving's gRPC health
# service reports SERVING from start-up on and never per model. The tensorflow/serving images carry no curl,
# wget or python, but they do carry bash (their own entrypoint is a bash script), whose /dev/tcp redirection
# speaks enough HTTP for this.
#
# Usage: bash ready.sh MODEL [PORT]   (exit 0 = ready; the kubelet's timeoutSeconds bounds the call)
set -euo pipefail

model="${1:?usage: ready.sh MODEL [PORT]}"
port="${2:-8501}"

exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /v1/models/%s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "${model}" >&3

# Read line by line (at most 4 s of silence each) and stop at the first AVAILABLE: no reliance on the server
# closing the connection after its answer.
available='"state"[[:space:]]*:[[:space:]]*"AVAILABLE"'
status_line=""
line=""
while IFS= read -r -t 4 line <&3 || [[ -n "${line}" ]]; do
    if [[ -z "${status_line}" ]]; then
        status_line="${line%$'\r'}"
        if [[ "${status_line}" != HTTP/1.[01]\ 200* ]]; then
            echo "ready.sh: ${model}: ${status_line}" >&2
            exit 1
        fi
    elif [[ "${line}" =~ ${available} ]]; then
        exit 0
    fi
    line=""
done
echo "ready.sh: ${model}: ${status_line:-no answer}, no version AVAILABLE" >&2
exit 1

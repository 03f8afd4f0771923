#!/bin/sh
# Starts TF Serving on the model repository's models.config with relative base_paths made absolute.
#
# tlserve writes relative base_paths (`base_path: "demo"`) so that one models/ folder works on the host and
# mounted in a container: the embedded model server resolves them against the config file's folder. TF Serving
# does not resolve them at all: it refuses a relative base_path ("Expected model demo to have an absolute path
# or URI", server_core.cc, 2.19). So this script copies $MODEL_BASE_PATH/models.config (the repository, /models
# in the image) to $TMPDIR/models.config with every relative base_path prefixed by $MODEL_BASE_PATH/: the same
# paths `tlserve promote --server-models-dir /models` sends with each reload. Absolute paths and URIs
# (gs://, s3://) stay as they are. TF Serving is not told to poll the file: see docs/deploy.md, "models.config
# and base paths".
#
# Usage: sh start.sh [tensorflow_model_server flags, without --model_config_file]
set -eu

repository="${MODEL_BASE_PATH:-/models}"
served_config="${TMPDIR:-/tmp}/models.config"
config="${repository}/models.config"
if [ ! -f "${config}" ]; then
    # Nothing published yet (the first publish writes models.config): serve the tracked example.
    config="${repository}/models.config.example"
fi

sed -E "/base_path:[[:space:]]*[\"'][A-Za-z][A-Za-z0-9+.-]*:\\/\\//! s#(base_path:[[:space:]]*[\"'])([^/\"'])#\\1${repository}/\\2#" \
    "${config}" >"${served_config}.new"
mv "${served_config}.new" "${served_config}"
echo "start.sh: serving ${config} as ${served_config}" >&2
exec tensorflow_model_server --model_config_file="${served_config}" "$@"

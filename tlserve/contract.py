"""The exported-model contract shared by training/ (which writes it) and service/ (which serves it).

Names here are part of the on-disk and wire format (models/README.md, docs/gateway.md); changing one
breaks served models.
This module is deliberately free of TensorFlow so the gateway can import it cheaply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

# Signatures of every exported version.
SIGNATURE_BYTES: Final = "serving_default"
SIGNATURE_PIXELS: Final = "predict_pixels"
INPUT_BYTES: Final = "image_bytes"
INPUT_PIXELS: Final = "pixels"
OUTPUT_PROBABILITIES: Final = "probabilities"
OUTPUT_CLASSES: Final = "classes"
OUTPUT_SCORES: Final = "scores"
MAX_TOP_K: Final = 5

# Files inside a version directory.
LABELS_FILE: Final = Path("assets") / "labels.txt"
METADATA_FILE: Final = Path("assets.extra") / "metadata.json"
WARMUP_FILE: Final = Path("assets.extra") / "tf_serving_warmup_requests"

# Files of the model repository (models/).
MODELS_CONFIG_FILE: Final = "models.config"
AUDIT_LOG_FILE: Final = "audit.jsonl"

# Encoded formats the serving_default signature decodes (tf.io.decode_image); training and the gateway accept these.
SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP"})
# More pixels than this in one image is treated as a decompression bomb, in training data and in requests alike.
MAX_IMAGE_PIXELS: Final = 40_000_000

# TF Serving accepts version labels matching this (g3doc/serving_config.md); so do we.
LABEL_PATTERN: Final = re.compile(r"^[a-zA-Z0-9_]+$")
MODEL_NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def top_k_problem(value: object) -> str | None:
    """The one `top_k` rule of /predict, the JSON body and `tlserve predict` (HTTP and gRPC): an integer (not a
    boolean) from 1 to MAX_TOP_K. None when `value` follows it, else the reason, worded the same everywhere."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
        return f"top_k must be an integer from 1 to {MAX_TOP_K}, not {value!r}"
    return None


def check_top_k(value: object) -> int:
    """`value` if it follows the top_k rule, else ValueError with the reason."""
    problem = top_k_problem(value)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(value, int)
    return value


def top_k_for(num_classes: int) -> int:
    """K of the `classes`/`scores` outputs: every class, capped at MAX_TOP_K."""
    return min(MAX_TOP_K, num_classes)


def list_versions(model_dir: Path) -> list[int]:
    """Integer version directories under a model's base path, ascending.

    Anything else (staging directories, files, `v2`, `0012`) is invisible, as it is to TF Serving's poller.
    """
    if not model_dir.is_dir():
        return []
    versions = []
    for child in model_dir.iterdir():
        name = child.name
        if name.isdigit() and str(int(name)) == name and child.is_dir():
            versions.append(int(name))
    return sorted(versions)


def unconfigured_model_folders(models_dir: Path) -> list[Path]:
    """The model folders a repository without models.config serves: visible folders holding at least one version.

    One rule for the promotion tools (what they write into a first models.config), the embedded model server's
    `--models-dir` (what it serves, latest version each) and the gateway (which models it reports and defaults to).
    A folder without versions yet serves nothing, so it is not counted (it would keep `/readyz` at 503).
    """
    if not models_dir.is_dir():
        return []
    return sorted(child for child in models_dir.iterdir() if not child.name.startswith(".") and list_versions(child))

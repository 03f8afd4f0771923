"""Export a trained Keras classifier as one TF Serving version (TF Serving's layout, see models/README.md).

The SavedModel carries its own decode → resize → preprocess, so a client sends encoded image bytes and
serving cannot disagree with training. Written with `tf.saved_model.save` around explicit signatures:
`keras.Model.export` would write the variables twice (309 MB instead of 155 MB for VGG16).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from tlserve import __version__, contract
from training.preprocessing import decode_and_resize


@dataclass(frozen=True)
class ExportSpec:
    """What a version must know about itself besides its weights."""

    classes: Sequence[str]
    image_size: int
    base: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


class _Servable(tf.Module):  # type: ignore[misc]
    """The two exported signatures around a Keras model that maps float pixels [0, 255] → probabilities."""

    def __init__(self, model: Any, classes: Sequence[str], image_size: int) -> None:
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.top_k = contract.top_k_for(len(classes))
        self.class_names = tf.constant(list(classes), dtype=tf.string)

        size = image_size
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_BYTES)],
        )
        self.serve_pixels = tf.function(
            self._serve_pixels,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name=contract.INPUT_PIXELS)],
        )

    def _serve_bytes(self, image_bytes: Any) -> dict[str, Any]:
        size = self.image_size
        pixels = tf.map_fn(
            lambda one: decode_and_resize(one, size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return self._outputs(pixels)

    def _serve_pixels(self, pixels: Any) -> dict[str, Any]:
        return self._outputs(tf.cast(pixels, tf.float32))

    def _outputs(self, pixels: Any) -> dict[str, Any]:
        probabilities = tf.cast(self.model(pixels, training=False), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_CLASSES: tf.gather(self.class_names, indices),
            contract.OUTPUT_SCORES: scores,
        }


def export_saved_model(model: Any, spec: ExportSpec, out_dir: Path, *, warmup_images: Sequence[bytes] = ()) -> Path:
    """Write the SavedModel, labels, metadata and warmup records into `out_dir` (an empty staging dir)."""
    servable = _Servable(model, spec.classes, spec.image_size)
    signatures = {
        contract.SIGNATURE_BYTES: servable.serve_bytes.get_concrete_function(),
        contract.SIGNATURE_PIXELS: servable.serve_pixels.get_concrete_function(),
    }
    with _quiet_save_logs():
        tf.saved_model.save(servable, str(out_dir), signatures=signatures)
    write_labels(out_dir, spec.classes)
    write_metadata(out_dir, spec)
    if warmup_images:
        write_warmup_requests(out_dir, warmup_images)
    return out_dir


@contextlib.contextmanager
def _quiet_save_logs() -> Iterator[None]:
    """tf.saved_model.save logs an INFO line per renamed resource input and per assets dir: noise on every export."""
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(max(one.level, logging.WARNING))
    try:
        yield
    finally:
        for one, level in zip(loggers, levels, strict=True):
            one.setLevel(level)


def write_labels(version_dir: Path, classes: Sequence[str]) -> None:
    path = version_dir / contract.LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def write_metadata(version_dir: Path, spec: ExportSpec) -> None:
    metadata = {
        "classes": list(spec.classes),
        "image_size": spec.image_size,
        "base": spec.base,
        "metrics": dict(spec.metrics),
        "data_fingerprint": spec.data_fingerprint,
        "config": dict(spec.config),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tlserve_version": __version__,
        "tensorflow_version": tf.__version__,
        "signatures": {
            contract.SIGNATURE_BYTES: {"inputs": [contract.INPUT_BYTES]},
            contract.SIGNATURE_PIXELS: {"inputs": [contract.INPUT_PIXELS]},
        },
        **dict(spec.extra),
    }
    path = version_dir / contract.METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_warmup_requests(version_dir: Path, images: Sequence[bytes], *, max_records: int = 100) -> int:
    """TF Serving's warmup file: PredictionLog records of real-looking `serving_default` requests.

    One record per image (batch 1, the common online case) plus one batch of all images, so both the
    single-image and the batched graph are traced before the first client arrives.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    def record(batch: Sequence[bytes]) -> bytes:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=contract.SIGNATURE_BYTES))
        request.inputs[contract.INPUT_BYTES].CopyFrom(tf.make_tensor_proto(list(batch), dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        serialized: bytes = log.SerializeToString()
        return serialized

    batches: list[Sequence[bytes]] = [[image] for image in images[: max_records - 1]]
    if len(images) > 1:
        batches.append(list(images[: max_records - 1]))
    path = version_dir / contract.WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            writer.write(record(batch))
    return len(batches)

"""One loaded model version: its SavedModel signatures, run on numpy inputs with TF Serving's checks and messages.

Each version is loaded once with `tf.saved_model.load`; its SignatureDefs are read from `saved_model.pb` so
GetModelMetadata answers exactly what TF Serving would. Warmup replays `assets.extra/tf_serving_warmup_requests`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.modelserver.errors import FailedPrecondition, InvalidArgument, ServingError, from_tf_error
from tlserve.contract import SIGNATURE_BYTES, WARMUP_FILE

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warmup records.


def _joined(names: Sequence[str]) -> str:
    return ",".join(sorted(names))


@dataclass(frozen=True)
class Servable:
    """A loaded SavedModel version, safe to call from many threads."""

    name: str
    version: int
    path: Path
    loaded: Any  # the object tf.saved_model.load returned
    signature_defs: Any  # protobuf map signature name -> SignatureDef, from saved_model.pb

    @classmethod
    def load(cls, name: str, version: int, path: Path) -> Servable:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
        loaded = tf.saved_model.load(str(path))
        return cls(name, version, path, loaded, saved_model.meta_graphs[0].signature_def)

    def signature_def_map(self) -> Any:
        """TF Serving's SignatureDefMap for GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        return signature_map

    def signature(self, signature_name: str) -> Any:
        """The concrete function behind a signature; "" means serving_default."""
        key = signature_name or SIGNATURE_BYTES
        try:
            return self.loaded.signatures[key]
        except KeyError:
            raise FailedPrecondition(f'Serving signature key "{key}" not found.') from None

    def check_request(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> None:
        """TF Serving's request validation (aliases, dtypes, output filter) before any batching."""
        function = self.signature(signature_name)
        specs = _input_specs(function)
        for alias in inputs:
            if alias not in specs:
                raise InvalidArgument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{_joined(list(specs))}}}."
                )
        missing = [alias for alias in specs if alias not in inputs]
        if missing:
            raise InvalidArgument(
                f"input size does not match signature: {len(inputs)}!={len(specs)} "
                f"len({{{_joined(list(inputs))}}}) != len({{{_joined(list(specs))}}}). "
                f"Sent extra: {{}}. Missing but required: {{{_joined(missing)}}}."
            )
        for index, (alias, spec) in enumerate(sorted(specs.items())):
            _check_dtype(index, inputs[alias], spec)
            _check_shape(alias, inputs[alias], spec)
        _check_output_filter(function, output_filter)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> Arrays:
        """Call a signature; TensorFlow errors keep their code and message (e.g. INVALID_ARGUMENT for a bad image)."""
        import tensorflow as tf

        function = self.signature(signature_name)
        specs = _input_specs(function)
        try:
            tensors = {alias: tf.constant(value, dtype=specs[alias].dtype) for alias, value in inputs.items()}
            outputs = function(**tensors)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from exc
        except (TypeError, ValueError) as exc:
            # Shape or dtype mismatches are raised by the Python function-call layer, not as OpErrors.
            raise InvalidArgument(str(exc).splitlines()[0]) from exc
        wanted = list(output_filter) or list(outputs)
        return {alias: outputs[alias].numpy() for alias in wanted}

    def warm_up(self) -> int:
        """Replay the version's warmup Predict requests (PredictionLog TFRecord); returns how many ran."""
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        for raw in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                logger.warning("skipping non-Predict warmup record in %s", path)
                continue
            request = log.predict_log.request
            inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
            self.check_request(request.model_spec.signature_name, inputs, request.output_filter)
            self.run(request.model_spec.signature_name, inputs, request.output_filter)
            count += 1
        return count


def _input_specs(function: Any) -> dict[str, Any]:
    """Input alias → TensorSpec of a signature function (keyword-only arguments)."""
    _args, kwargs = function.structured_input_signature
    return dict(kwargs)


def _check_dtype(index: int, value: np.ndarray, spec: Any) -> None:
    import tensorflow as tf

    try:
        provided = tf.dtypes.as_dtype(value.dtype) if value.dtype != object else tf.string
    except TypeError:
        raise InvalidArgument(f"unsupported input dtype {value.dtype}") from None
    if provided != spec.dtype:
        raise InvalidArgument(
            f"Expects arg[{index}] to be {_tf_type_name(spec.dtype)} but {_tf_type_name(provided)} is provided"
        )


def _check_shape(alias: str, value: np.ndarray, spec: Any) -> None:
    """A loaded signature runs any shape into its graph (which then fails deep inside, as INTERNAL): check first."""
    if spec.shape.is_compatible_with(value.shape):
        return
    expected = ", ".join("-1" if size is None else str(size) for size in spec.shape.as_list())
    raise InvalidArgument(
        f"input {alias} has shape ({', '.join(map(str, value.shape))}) but the signature expects ({expected})"
    )


def _tf_type_name(dtype: Any) -> str:
    """TensorFlow's DataTypeString spelling (DT_FLOAT → "float"), as its error messages use."""
    from tensorflow.core.framework import types_pb2

    return str(types_pb2.DataType.Name(dtype.as_datatype_enum)).removeprefix("DT_").lower()


def _check_output_filter(function: Any, output_filter: Sequence[str]) -> None:
    outputs = list(function.structured_outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_joined(outputs)}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


def load_servable(name: str, version: int, path: Path, *, warm_up: bool = True) -> Servable:
    """Load and warm up one version; any failure becomes a ServingError carrying the reason."""
    try:
        servable = Servable.load(name, version, path)
        if warm_up:
            records = servable.warm_up()
            logger.info("warmed up %s version %d with %d requests", name, version, records)
        return servable
    except Exception as exc:
        error = exc if isinstance(exc, ServingError) else from_tf_error(exc)
        raise type(error)(f"Failed to load {name} version {version} from {path}: {error.message}") from exc

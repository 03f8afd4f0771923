"""TF Serving's REST JSON (g3doc/api_rest.md) translated to and from its gRPC messages.

Requests: row format `{"instances": [...]}` or columnar `{"inputs": ...}`, binary values as `{"b64": "..."}`.
Responses: `{"predictions": ...}` / `{"outputs": ...}`; status and metadata as TF Serving prints them (json_format).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
from google.protobuf import json_format

from service.gateway.core.tensors import UnsupportedDtype, from_array, numpy_dtype, to_array
from service.gateway.errors import BadRequest, InvalidJson, ValidationFailed
from tlserve.protocol import get_model_metadata_pb2, predict_pb2, types_pb2

InputTypes = dict[str, int]  # input name → DataType enum of the signature


def load_json(body: bytes) -> Any:
    """Parse a request body; TF Serving accepts NaN/Infinity, and so does Python's json.

    Nesting deeper than Python's recursion limit (e.g. `[` * 5000) is a bad body too, not a server error.
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidJson("body is not valid JSON: nested too deeply") from exc


def decode_b64(value: Any) -> bytes:
    """`{"b64": "..."}` → bytes; standard base64 only, like TF Serving."""
    encoded = value.get("b64") if isinstance(value, dict) else None
    if not isinstance(encoded, str):
        raise ValidationFailed('binary values must be {"b64": "<base64 string>"}')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64: {exc}") from exc


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _string_leaves(value: Any) -> Any:
    """Nested lists of {"b64"} objects or plain strings → nested lists of bytes."""
    if isinstance(value, list):
        return [_string_leaves(item) for item in value]
    if _is_b64(value):
        return decode_b64(value)
    if isinstance(value, str):
        return value.encode()
    raise ValidationFailed(f"expected a string or a b64 object, got {type(value).__name__}")


def json_to_tensor(value: Any, dtype: int) -> Any:
    """One JSON value (scalar or nested lists) as a TensorProto of the signature's dtype."""
    try:
        if dtype == types_pb2.DT_STRING:
            leaves = _string_leaves(value)
            array = np.empty(np.shape(leaves) if isinstance(leaves, list) else (), dtype=object)
            array[...] = leaves
        else:
            array = np.asarray(value, dtype=numpy_dtype(dtype))
        return from_array(array, dtype)
    except UnsupportedDtype as exc:
        raise BadRequest(str(exc)) from exc
    except RecursionError as exc:
        raise ValidationFailed("the input is nested too deeply") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationFailed(f"cannot convert the input to a {types_pb2.DataType.Name(dtype)} tensor: {exc}") from exc


def build_predict_request(payload: Any, input_types: InputTypes) -> tuple[Any, bool]:
    """A PredictRequest (inputs only) from a TF Serving REST body; also whether it used the row format."""
    if not isinstance(payload, dict):
        raise ValidationFailed('the body must be a JSON object with "instances" or "inputs"')
    if ("instances" in payload) == ("inputs" in payload):
        raise ValidationFailed('the body must have exactly one of "instances" (row format) or "inputs" (columnar)')
    row_format = "instances" in payload
    named = (
        _row_inputs(payload["instances"], input_types)
        if row_format
        else _columnar_inputs(payload["inputs"], input_types)
    )
    request = predict_pb2.PredictRequest()
    for name, value in named.items():
        if name not in input_types:
            raise ValidationFailed(f"unknown input {name!r}; the signature has {sorted(input_types)}")
        request.inputs[name].CopyFrom(json_to_tensor(value, input_types[name]))
    signature_name = payload.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise ValidationFailed("signature_name must be a string")
    request.model_spec.signature_name = signature_name
    return request, row_format


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value) and bool(value)


def _row_inputs(instances: Any, input_types: InputTypes) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise ValidationFailed('"instances" must be a non-empty list')
    if not all(_is_named(item) for item in instances):
        return {_single_input(input_types): instances}
    names = set(instances[0])
    if any(set(item) != names for item in instances):
        raise ValidationFailed("every instance must name the same inputs")
    return {name: [item[name] for item in instances] for name in names}


def _columnar_inputs(inputs: Any, input_types: InputTypes) -> dict[str, Any]:
    if _is_named(inputs):
        return dict(inputs)
    return {_single_input(input_types): inputs}


def _single_input(input_types: InputTypes) -> str:
    if len(input_types) != 1:
        raise ValidationFailed(f"the signature has several inputs {sorted(input_types)}; name them")
    return next(iter(input_types))


def _jsonable(name: str, array: np.ndarray[Any, Any]) -> Any:
    if array.dtype == object:
        # TF Serving's rule: outputs named *_bytes are binary and come back as {"b64": ...}.
        if name.endswith("_bytes"):
            convert: Any = np.vectorize(lambda item: {"b64": base64.b64encode(item).decode()}, otypes=[object])
        else:
            convert = np.vectorize(lambda item: item.decode("utf-8", "replace"), otypes=[object])
        return convert(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_response_json(response: Any, row_format: bool) -> dict[str, Any]:
    """`{"predictions": [...]}` (row) or `{"outputs": ...}` (columnar); a lone output loses its name."""
    outputs = {name: _jsonable(name, to_array(tensor)) for name, tensor in sorted(response.outputs.items())}
    if not row_format:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = min(len(value) for value in outputs.values() if isinstance(value, list))
    return {"predictions": [{name: value[index] for name, value in outputs.items()} for index in range(rows)]}


def status_json(response: Any) -> dict[str, Any]:
    """GetModelStatusResponse exactly as TF Serving's REST status route prints it."""
    return _to_dict(response)


def metadata_json(response: Any) -> dict[str, Any]:
    """GetModelMetadataResponse as TF Serving prints it: the `Any` metadata unpacked into its SignatureDefMap."""
    metadata = {}
    for key, packed in response.metadata.items():
        signatures = get_model_metadata_pb2.SignatureDefMap()
        packed.Unpack(signatures)
        metadata[key] = _to_dict(signatures)
    return {"model_spec": _to_dict(response.model_spec), "metadata": metadata}


def signature_inputs(response: Any) -> dict[str, InputTypes]:
    """Signature name → its inputs' dtypes, from a GetModelMetadataResponse."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {
        name: {key: info.dtype for key, info in signature.inputs.items()}
        for name, signature in signatures.signature_def.items()
    }


def select_signature(signatures: dict[str, InputTypes], signature_name: str) -> InputTypes:
    """The inputs of the signature a body names (`serving_default` when it names none), as TF Serving words it."""
    name = signature_name or "serving_default"
    if name not in signatures:
        raise BadRequest(f"serving signature name: {name!r} not found in signature def")
    return signatures[name]


def _to_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result

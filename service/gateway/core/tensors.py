"""TensorProto <-> numpy without TensorFlow ops: the request path builds and reads protos directly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

from tlserve.protocol import tensor_pb2, tensor_shape_pb2, types_pb2

TensorProto: TypeAlias = Any

# DataType → (numpy dtype, TensorProto field holding the values when tensor_content is empty).
_DTYPES: dict[int, tuple[Any, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_STRING: (object, "string_val"),
}


class UnsupportedDtype(ValueError):
    """A tensor type the gateway does not translate."""


def shape_proto(shape: Sequence[int]) -> Any:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape])


def string_tensor(values: Sequence[bytes]) -> TensorProto:
    """A 1-D DT_STRING tensor (e.g. encoded images for `image_bytes`)."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape_proto([len(values)]))
    tensor.string_val.extend(values)
    return tensor


def dtype_name(dtype: int) -> str:
    return str(types_pb2.DataType.Name(dtype))


def numpy_dtype(dtype: int) -> Any:
    """The numpy dtype holding values of a DataType (object for strings)."""
    if dtype not in _DTYPES:
        raise UnsupportedDtype(f"tensor type {dtype_name(dtype)} is not supported")
    return _DTYPES[dtype][0]


def to_array(tensor: TensorProto) -> np.ndarray[Any, Any]:
    """The tensor's values as a numpy array of its shape (strings stay bytes, dtype object)."""
    if tensor.dtype not in _DTYPES:
        raise UnsupportedDtype(f"tensor type {dtype_name(tensor.dtype)} is not supported")
    np_dtype, field = _DTYPES[tensor.dtype]
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_content and tensor.dtype != types_pb2.DT_STRING:
        return np.frombuffer(tensor.tensor_content, dtype=np_dtype).reshape(shape)
    values = list(getattr(tensor, field))
    if tensor.dtype == types_pb2.DT_HALF:  # half_val holds the raw 16-bit patterns
        array = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(values, dtype=np_dtype)
    size = int(np.prod(shape)) if shape else 1
    if array.size == 1 and size > 1:  # TF's shorthand: one value fills the whole tensor
        array = np.full(size, array[0], dtype=array.dtype)
    return array.reshape(shape)


def from_array(array: np.ndarray[Any, Any], dtype: int) -> TensorProto:
    """A TensorProto of `dtype` holding `array` (already converted to the right kind of values)."""
    if dtype not in _DTYPES:
        raise UnsupportedDtype(f"tensor type {dtype_name(dtype)} is not supported")
    np_dtype = _DTYPES[dtype][0]
    tensor = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape_proto(array.shape))
    if dtype == types_pb2.DT_STRING:
        tensor.string_val.extend(array.reshape(-1).tolist())
    else:
        tensor.tensor_content = np.ascontiguousarray(array, dtype=np_dtype).tobytes()
    return tensor

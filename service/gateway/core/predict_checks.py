"""Checks of a TF Serving PredictRequest before it goes upstream: real shapes, the images-per-request limit,
and the same header checks for encoded images as `/predict` (no TensorFlow ops, only the proto's fields).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.gateway.core.request_limits import DEFAULT_MAX_REQUEST_PIXELS, check_request_pixels, tensor_pixels
from service.gateway.core.tensors import UnsupportedDtype, numpy_dtype
from service.gateway.core.validation import check_images
from service.gateway.errors import BadRequest, PayloadTooLarge
from tlserve.contract import INPUT_BYTES, INPUT_PIXELS
from tlserve.protocol import types_pb2


def check_predict_request(
    request: Any, *, max_images: int, max_pixels: int, max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
) -> None:
    """Shapes must be real; encoded-image inputs get the header checks; every input the images-per-request limit;
    all images together the decoded-pixel budget."""
    pixel_counts: list[int] = []
    for name, tensor in request.inputs.items():
        check_shape(name, tensor)
        sizes = [dim.size for dim in tensor.tensor_shape.dim]
        rows = sizes[0] if sizes else 1
        if rows > max_images:
            raise PayloadTooLarge(f"input {name!r} has {rows} rows, more than the limit of {max_images}")
        if rows == 0:
            raise BadRequest(f"input {name!r} has 0 rows; send at least one image")
        if name == INPUT_BYTES:
            check_image_bytes_dtype(tensor)
            headers = check_images(list(tensor.string_val), max_images=max_images, max_pixels=max_pixels)
            pixel_counts.extend(header.decoded_pixels for header in headers)
        elif name == INPUT_PIXELS:
            pixel_counts.append(tensor_pixels(sizes))
    check_request_pixels(pixel_counts, max_request_pixels)


def check_image_bytes_dtype(tensor: Any) -> None:
    """Encoded images travel as DT_STRING; anything else would otherwise read as "no image"."""
    if tensor.dtype != types_pb2.DT_STRING:
        dtype = types_pb2.DataType.Name(tensor.dtype) if tensor.dtype in types_pb2.DataType.values() else tensor.dtype
        raise BadRequest(
            f"input {INPUT_BYTES!r} is {dtype}; it takes encoded images (DT_STRING), "
            f"decoded pixels go to {INPUT_PIXELS!r} of the predict_pixels signature"
        )


def check_shape(name: str, tensor: Any) -> None:
    """A tensor's dims are sizes (no -1, which only signatures use) and agree with the values it carries."""
    sizes = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_shape.unknown_rank or any(size < 0 for size in sizes):
        raise BadRequest(f"input {name!r} has an invalid shape {sizes}: every dimension must be a size >= 0")
    count = math.prod(sizes)
    if tensor.dtype == types_pb2.DT_STRING and len(tensor.string_val) != count:
        raise BadRequest(f"input {name!r} has shape {sizes} ({count} values) but carries {len(tensor.string_val)}")
    if tensor.tensor_content and tensor.dtype != types_pb2.DT_STRING:
        try:
            itemsize = np.dtype(numpy_dtype(tensor.dtype)).itemsize
        except UnsupportedDtype:
            return  # the model server judges types the gateway does not know
        if len(tensor.tensor_content) != count * itemsize:
            raise BadRequest(
                f"input {name!r} has shape {sizes} ({count} values) but {len(tensor.tensor_content)} bytes of content"
            )

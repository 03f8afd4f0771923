"""`--batching-parameters-file`: TF Serving's text-format `BatchingParameters`, parsed with the same field names.

The pip package tensorflow-serving-api does not ship `session_bundle_config_pb2`, so the message is declared
here from `servables/tensorflow/session_bundle_config.proto` (same field numbers and wrapper types) and parsed
with protobuf's own text_format: a file TF Serving accepts is accepted here, and a typo is rejected the same way.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from service.modelserver.batching import BatchingOptions
from service.modelserver.errors import InvalidArgument

_PROTO_FILE = "tlserve/session_bundle_config_subset.proto"
# (field, number, wrapper type or None for a plain repeated int64 / bool)
_FIELDS = (
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, None),
    ("pad_variable_length_inputs", 7, None),
)


@functools.cache
def batching_parameters_class() -> Any:
    """The BatchingParameters message class, built once from a descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=_PROTO_FILE, package="tensorflow.serving", syntax="proto3", dependency=[wrappers.name]
    )
    message = file_proto.message_type.add(name="BatchingParameters")
    for name, number, type_name in _FIELDS:
        field = message.field.add(name=name, number=number)
        if type_name:
            field.type, field.type_name = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, type_name
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        elif name == "allowed_batch_sizes":
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        else:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Text BatchingParameters → options; omitted fields keep TF Serving's defaults."""
    from google.protobuf import text_format

    params = batching_parameters_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"cannot parse batching parameters: {exc}") from exc
    defaults = default_batching_options()
    options = BatchingOptions(
        max_batch_size=_int(params, "max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=_int(params, "batch_timeout_micros", defaults.batch_timeout_micros),
        num_batch_threads=_int(params, "num_batch_threads", defaults.num_batch_threads),
        max_enqueued_batches=_int(params, "max_enqueued_batches", defaults.max_enqueued_batches),
        thread_pool_name=params.thread_pool_name.value if params.HasField("thread_pool_name") else "batch_threads",
    )
    _validate(options, list(params.allowed_batch_sizes))
    return options


def read_batching_parameters(path: Path) -> BatchingOptions:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read batching parameters file {path}: {exc.strerror}") from exc
    return parse_batching_parameters(text)


def default_batching_options() -> BatchingOptions:
    """TF Serving's defaults; batch threads default to the number of cores, as its docs advise for CPU."""
    return BatchingOptions(num_batch_threads=max(1, os.cpu_count() or 1))


def _int(params: Any, name: str, default: int) -> int:
    return int(getattr(params, name).value) if params.HasField(name) else default


def _validate(options: BatchingOptions, allowed_batch_sizes: list[int]) -> None:
    if options.max_batch_size < 1:
        raise InvalidArgument("max_batch_size must be positive")
    if options.num_batch_threads < 1:
        raise InvalidArgument("num_batch_threads must be positive")
    if options.max_enqueued_batches < 1:
        raise InvalidArgument("max_enqueued_batches must be positive")
    if options.batch_timeout_micros < 0:
        raise InvalidArgument("batch_timeout_micros must be non-negative")
    if allowed_batch_sizes and (
        allowed_batch_sizes != sorted(set(allowed_batch_sizes)) or allowed_batch_sizes[-1] != options.max_batch_size
    ):
        raise InvalidArgument("allowed_batch_sizes must be increasing and end with max_batch_size")

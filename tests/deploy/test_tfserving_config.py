"""deploy/tfserving: the text protos TF Serving reads parse as the messages its flags expect."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message

from tests.deploy.tools import DEPLOY

CONFIG_DIR = DEPLOY / "tfserving"
WRAPPERS = {"int64": ".google.protobuf.Int64Value", "bool": ".google.protobuf.BoolValue"}
# session_bundle_config.proto's BatchingParameters and monitoring_config.proto's MonitoringConfig are not in the
# tensorflow-serving-api wheel; these are their fields (names, numbers and types as in TF Serving's sources).
BATCHING_FIELDS = {
    "max_batch_size": (1, "int64"),
    "batch_timeout_micros": (2, "int64"),
    "max_enqueued_batches": (3, "int64"),
    "num_batch_threads": (4, "int64"),
    "pad_variable_length_inputs": (7, "bool"),
}


def _message_classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tlserve_test_tfserving.proto", package="tlserve_test", dependency=[wrappers_pb2.DESCRIPTOR.name]
    )
    batching = proto.message_type.add(name="BatchingParameters")
    for name, (number, kind) in BATCHING_FIELDS.items():
        batching.field.add(name=name, number=number, type=11, type_name=WRAPPERS[kind], label=1)  # 11 = message
    batching.field.add(name="allowed_batch_sizes", number=6, type=3, label=3)  # repeated int64
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=8, label=1)  # bool
    prometheus.field.add(name="path", number=2, type=9, label=1)  # string
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=11, type_name=".tlserve_test.PrometheusConfig")
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tlserve_test.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def test_models_config_is_a_model_server_config_relative_to_its_folder() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((CONFIG_DIR / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "demo"
    # Relative, as tlserve writes it; start.sh makes it /models/demo for TF Serving (test_tfserving_scripts.py).
    assert model.base_path == "demo"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def test_batching_parameters_parse_and_suit_online_serving() -> None:
    params = text_format.Parse(
        (CONFIG_DIR / "batching_parameters.txt").read_text(), _message_classes()["BatchingParameters"]()
    )
    assert params.max_batch_size.value == 32
    assert 0 < params.batch_timeout_micros.value <= 10_000  # "a few milliseconds" (batching guide)
    # Online serving: a short queue (about num_batch_threads) rejects instead of building a backlog.
    assert params.max_enqueued_batches.value <= 2 * params.num_batch_threads.value
    assert not params.allowed_batch_sizes


def test_monitoring_config_enables_prometheus_on_the_path_scraped() -> None:
    config = text_format.Parse(
        (CONFIG_DIR / "monitoring_config.txt").read_text(), _message_classes()["MonitoringConfig"]()
    )
    assert config.prometheus_config.enable
    scrape = (DEPLOY / "monitoring" / "prometheus" / "prometheus.yml").read_text()
    assert f"metrics_path: {config.prometheus_config.path}" in scrape


def test_a_misspelt_field_is_rejected() -> None:
    """Guards the parse checks: an unknown field (what TF Serving would refuse at start-up) must not parse."""
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse("max_batch_sise { value: 8 }", _message_classes()["BatchingParameters"]())

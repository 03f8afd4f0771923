"""tlserve.tfrecord reads what tf.io.TFRecordWriter writes (warmup requests) and refuses damaged files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlserve import contract, tfrecord
from tlserve.protocol import prediction_log_pb2

RECORDS = [b"", b"abc", bytes(range(256)) * 300]


def write_with_tensorflow(path: Path, records: list[bytes]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def test_reads_every_record_tensorflow_wrote_and_frames_them_identically(tmp_path: Path) -> None:
    path = tmp_path / "records"
    write_with_tensorflow(path, RECORDS)
    assert list(tfrecord.read_records(path)) == RECORDS
    assert path.read_bytes() == b"".join(tfrecord.encode_record(record) for record in RECORDS)


def test_crc32c_matches_the_standard_check_value() -> None:
    assert tfrecord.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1], "truncated record"),
        (lambda data: data[:5], "truncated record header"),
        (lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], "checksum mismatch"),
        (lambda data: bytes([data[0] ^ 1]) + data[1:], "corrupt record length"),
    ],
)
def test_refuses_a_damaged_file(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "records"
    path.write_bytes(damage(tfrecord.encode_record(b"x" * 40)))
    with pytest.raises(tfrecord.TFRecordError, match=message):
        list(tfrecord.read_records(path))


def test_warmup_requests_of_an_exported_version_parse_as_prediction_logs(exported_version: Path) -> None:
    records = tfrecord.read_records(exported_version / contract.WARMUP_FILE)
    requests = [prediction_log_pb2.PredictionLog.FromString(record).predict_log.request for record in records]
    assert len(requests) >= 2
    assert {request.model_spec.signature_name for request in requests} == {"serving_default"}
    assert all(request.inputs["image_bytes"].string_val for request in requests)

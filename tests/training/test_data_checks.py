"""`scan_dataset` / `tlserve data check` on a dataset holding every kind of bad and odd file."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import encode_image
from tests.training.imagefiles import PIXELS, animated_gif, bad_files, odd_files, png_header_only, save_image
from tlserve import cli
from training.data import DatasetError, scan_dataset
from training.data.checks import inspect_image


def main(argv: list[str]) -> int:
    """`tlserve ...` in-process with only the training pipeline's commands registered (other groups may be mid-edit)."""
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ("training.cli",)
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel_path, data in files.items():
        (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (root / rel_path).write_bytes(data)


@pytest.fixture(scope="module")
def dirty_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dirty")
    good = {
        f"{label}/good{i}.png": encode_image(PIXELS[:, :, ::-1] // (i + 1) + offset)
        for offset, label in enumerate(("cat", "dog"))
        for i in range(3)
    }
    extras = {"cat/.DS_Store": b"junk", "dog/README.txt": b"not an image", ".hidden/x.png": encode_image(PIXELS)}
    _write(root, good | extras | {k: v for k, (v, _) in (bad_files() | odd_files()).items()})
    return root


@pytest.fixture(scope="module")
def dirty_scan(dirty_dataset: Path):
    return scan_dataset(dirty_dataset, progress=False)


def test_report_names_every_bad_file_with_its_reason(dirty_scan) -> None:
    reported = {bad.rel_path: bad.reason for bad in dirty_scan.bad}
    assert set(reported) == set(bad_files())
    for rel_path, (_, reason) in bad_files().items():
        assert reported[rel_path].startswith(reason), rel_path


def test_distinct_files_are_not_reported_as_duplicates(dirty_scan) -> None:
    assert dirty_scan.duplicates == []


def test_report_names_every_odd_file_and_keeps_it(dirty_scan) -> None:
    odd = dict(dirty_scan.odd)
    usable = {record.rel_path for record in dirty_scan.records}
    for rel_path, (_, oddity) in odd_files().items():
        assert oddity in odd[rel_path], rel_path
        assert rel_path in usable
    assert all(rel_path.endswith("good0.png") is False for rel_path in odd)


def test_only_files_tensorflow_cannot_decode_need_conversion(dirty_scan) -> None:
    converted = {record.rel_path for record in dirty_scan.records if record.needs_conversion}
    assert converted == {"cat/scan.tiff"}


def test_hidden_and_non_image_files_are_ignored_and_counted(dirty_scan) -> None:
    assert dirty_scan.ignored == 2  # .DS_Store and README.txt; hidden folders beside the classes are not the dataset
    assert dirty_scan.classes == ["cat", "dog"]
    assert sum(dirty_scan.counts().values()) == 6 + len(odd_files())


def test_pil_half_readable_truncated_jpeg_is_unusable() -> None:
    jpeg = encode_image(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8), "JPEG")
    truncated = jpeg[: int(len(jpeg) * 0.8)]
    with Image.open(io.BytesIO(truncated)) as image:  # the header still parses: a naive open() check passes
        assert image.size == (256, 256)
    assert inspect_image(truncated, ".jpg").problem == "truncated JPEG"


def test_pil_bomb_warning_range_is_reported_not_printed(tmp_path: Path) -> None:
    _write(tmp_path, {"cat/big.png": png_header_only(10_000, 10_000), "dog/ok.png": encode_image(PIXELS)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan = scan_dataset(tmp_path, progress=False)
    assert [(bad.rel_path, bad.reason) for bad in scan.bad] == [
        ("cat/big.png", "absurd dimensions (100 MP, a decompression bomb)")
    ]
    assert not [warning for warning in caught if issubclass(warning.category, Image.DecompressionBombWarning)]


def test_max_pixels_limit_is_checked_from_the_header() -> None:
    verdict = inspect_image(encode_image(PIXELS), ".png", max_pixels=1000)
    assert verdict.problem == "absurd dimensions (48x40 = 0 MP)"


def test_bad_reasons_group_reasons_for_a_one_line_summary(dirty_scan) -> None:
    assert dirty_scan.bad_reasons() == {
        "absurd dimensions": 2,
        "0-byte": 1,
        "truncated JPEG": 1,
        "not an image": 1,
        "truncated PNG": 1,
    }


def test_data_check_prints_counts_and_every_bad_file(dirty_dataset: Path, capsys) -> None:
    assert main(["data", "check", str(dirty_dataset)]) == 0
    out = capsys.readouterr().out
    assert "cat" in out
    assert "total" in out
    for rel_path, (_, reason) in bad_files().items():
        assert any(rel_path in line and reason.split(" (")[0] in line for line in out.splitlines()), rel_path
    for rel_path in odd_files():
        assert rel_path in out


def test_data_check_json_is_machine_readable(dirty_dataset: Path, capsys) -> None:
    assert main(["data", "check", str(dirty_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["cat", "dog"]
    assert {item["path"] for item in report["bad"]} == set(bad_files())
    assert sum(sum(counts.values()) for counts in report["counts"].values()) == report["usable"]
    assert report["ignored"] == 2


def test_quarantine_moves_unusable_files_keeping_relative_paths(dirty_dataset: Path, tmp_path: Path, capsys) -> None:
    import shutil

    dataset = tmp_path / "data"
    shutil.copytree(dirty_dataset, dataset)
    quarantine = tmp_path / "quarantine"
    assert main(["data", "check", str(dataset), "--quarantine", str(quarantine), "--json"]) == 0
    for rel_path, (data, _) in bad_files().items():
        assert not (dataset / rel_path).exists()
        assert (quarantine / rel_path).read_bytes() == data  # moved, not deleted or rewritten
    assert len(json.loads(capsys.readouterr().out)["quarantined"]) == len(bad_files())
    assert scan_dataset(dataset, progress=False).bad == []


def test_quarantine_inside_the_dataset_is_refused(dirty_dataset: Path, capsys) -> None:
    assert main(["data", "check", str(dirty_dataset), "--quarantine", str(dirty_dataset / "bad")]) == 2
    assert "inside the dataset" in capsys.readouterr().err


def test_missing_folder_exits_2_with_one_line_reason(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err
    assert len(err.strip().splitlines()) == 1


def test_folder_without_class_folders_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "loose.png").write_bytes(encode_image(PIXELS))
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    with pytest.raises(DatasetError):
        scan_dataset(tmp_path, progress=False)


def _valid_images() -> list[tuple[str, bytes]]:
    image = Image.fromarray(PIXELS)
    return [
        (".jpg", encode_image(PIXELS, "JPEG")),
        (".png", encode_image(PIXELS)),
        (".gif", animated_gif()),
        (".bmp", save_image(image, "BMP")),
        (".tif", save_image(image, "TIFF")),
    ]


@settings(max_examples=60, deadline=None)
@given(
    which=st.integers(0, 4),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def test_damaged_files_are_judged_without_raising_and_usable_ones_really_decode(which, cut, flips) -> None:
    import tensorflow as tf

    from training.data.checks import to_png_bytes
    from training.preprocessing import decode_and_resize

    suffix, data = _valid_images()[which]
    damaged = bytearray(data[: max(0, int(len(data) * cut))] if cut < 0.98 else data)
    for position, value in flips:
        if damaged:
            damaged[int(position * (len(damaged) - 1))] = value
    verdict = inspect_image(bytes(damaged), suffix)  # never raises, whatever the bytes
    if verdict.usable:  # then the training pipeline's decode must succeed on what it will be fed
        fed = to_png_bytes(bytes(damaged)) if verdict.needs_conversion else bytes(damaged)
        assert decode_and_resize(tf.constant(fed), 16).shape == (16, 16, 3)

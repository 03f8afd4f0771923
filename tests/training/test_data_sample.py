"""`tlserve data sample`: a deterministic generated dataset that scans clean and is safe to write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.test_data_checks import main
from training.data import scan_dataset
from training.data.sample import MARKER_FILE, SHAPES, SampleError, SampleSpec, write_sample


def _digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    spec = SampleSpec(classes=3, per_class=4, size=32, seed=11)
    write_sample(tmp_path / "a", spec)
    write_sample(tmp_path / "b", spec)
    write_sample(tmp_path / "c", SampleSpec(classes=3, per_class=4, size=32, seed=12))
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def test_sample_scans_clean_with_one_folder_per_shape(tmp_path: Path) -> None:
    write_sample(tmp_path, SampleSpec(classes=4, per_class=5, size=24, format="jpeg"))
    scan = scan_dataset(tmp_path, progress=False)
    assert scan.classes == sorted(SHAPES[:4])
    assert scan.counts() == dict.fromkeys(scan.classes, 5)
    assert scan.bad == []
    assert scan.odd == []
    assert scan.duplicates == []
    with Image.open(next((tmp_path / "circle").iterdir())) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (24, 24), "RGB")


def test_shape_not_colour_separates_the_classes(tmp_path: Path) -> None:
    write_sample(tmp_path, SampleSpec(classes=2, per_class=30, size=32, seed=0))
    mean_colour = {
        shape: np.mean([np.asarray(Image.open(path)).mean(axis=(0, 1)) for path in (tmp_path / shape).iterdir()], 0)
        for shape in ("circle", "square")
    }
    # Backgrounds and shapes take random colours: class means sit close together, not at a class colour.
    assert np.max(np.abs(mean_colour["circle"] - mean_colour["square"])) < 40


def test_rewriting_a_sample_replaces_it(tmp_path: Path) -> None:
    write_sample(tmp_path, SampleSpec(classes=4, per_class=3, size=16))
    counts = write_sample(tmp_path, SampleSpec(classes=2, per_class=2, size=16))
    assert counts == {"circle": 2, "square": 2}
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([MARKER_FILE, "circle", "square"])
    assert json.loads((tmp_path / MARKER_FILE).read_text())["per_class"] == 2


def test_non_empty_folder_that_is_no_sample_is_refused_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "thesis.txt").write_text("precious")
    with pytest.raises(SampleError, match="not empty"):
        write_sample(tmp_path, SampleSpec(per_class=1, size=16))
    write_sample(tmp_path, SampleSpec(per_class=1, size=16), force=True)
    assert (tmp_path / "thesis.txt").read_text() == "precious"
    assert (tmp_path / "triangle").is_dir()


def test_cli_writes_the_sample(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    assert main(["data", "sample", str(out), "--classes", "2", "--per-class", "3", "--size", "16"]) == 0
    assert "wrote 6 images in 2 classes" in capsys.readouterr().out
    assert len(list(out.glob("*/*.png"))) == 6


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--classes", "9"], "--classes must be between 1 and 8"), (["--per-class", "0"], "--per-class")],
)
def test_cli_refuses_bad_arguments_with_exit_2(tmp_path: Path, capsys, arguments: list[str], message: str) -> None:
    assert main(["data", "sample", str(tmp_path / "out"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_foreign_non_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "sample", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_cli_out_that_cannot_be_created_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "somefile").write_text("x")  # a file where OUT's parent folder should be
    assert main(["data", "sample", str(tmp_path / "somefile" / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the sample to" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_small_cnn_learns_the_sample_from_scratch(tmp_path: Path) -> None:
    import keras

    from training.data import make_dataset

    write_sample(tmp_path, SampleSpec(classes=3, per_class=60, size=48, seed=0))
    scan = scan_dataset(tmp_path, progress=False)
    keras.utils.set_random_seed(0)
    train = make_dataset(scan.split("train"), 32, 16, num_classes=3, shuffle=True, seed=0)
    holdout = make_dataset(scan.split("val") + scan.split("test"), 32, 64, num_classes=3, shuffle=False, seed=0)
    layers = [keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1)]
    for filters in (16, 32, 64):
        layers += [keras.layers.Conv2D(filters, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D()]
    model = keras.Sequential([*layers, keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, epochs=25, verbose=0, shuffle=False)  # the dataset shuffles itself
    _, accuracy = model.evaluate(holdout, verbose=0)
    assert accuracy > 0.6, accuracy  # chance is 1/3; ~0.9 is typical, colour alone would give chance

"""The data stage of training: scan and check a dataset folder, split it, and feed it to Keras through tf.data.

    from training.data import scan_dataset, make_dataset, augmentation_layers
    scan = scan_dataset(Path("data"), val_fraction=0.15, test_fraction=0.15)
    train = make_dataset(scan.split("train"), 224, 32, num_classes=len(scan.classes), shuffle=True, seed=0)
    augment = augmentation_layers(rotation=0.1)   # inside the model, train split only

`make_dataset` is imported on first use, so `tlserve data sample` does not pay for importing TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.data.augment import augmentation_layers
from training.data.layout import DatasetError
from training.data.scan import BadFile, DatasetScan, ImageRecord, scan_dataset

if TYPE_CHECKING:
    from training.data.pipeline import make_dataset

__all__ = [
    "BadFile",
    "DatasetError",
    "DatasetScan",
    "ImageRecord",
    "augmentation_layers",
    "make_dataset",
    "scan_dataset",
]


def __getattr__(name: str) -> Any:
    if name == "make_dataset":
        from training.data.pipeline import make_dataset

        return make_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

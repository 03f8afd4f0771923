"""The training configuration, built from defaults, a TOML file and flags (in that order), in two parts:

- `TrainConfig`, the hyper-parameters: what the model is and how it is trained. A published version's metadata
  records exactly these (a retrain reads them back as its baseline).
- `RunOptions`, where a run reads and writes and how it reports (dataset folder, model name, models/ and runs/
  directories, --resume, --json): never part of a version.

Every field of either is both a `tlserve train` flag (`--image-size`) and a TOML key (`image_size` or
`image-size`), so a config file is just a saved command line. Free of TensorFlow: the CLI imports it to build its
parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from tlserve.console import CommandError

BASES = ("vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0")
OPTIMIZERS = ("sgd", "adam", "nadam", "adamw", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "exponential", "step", "plateau")
HEADS = ("flatten", "gap")
CLASS_WEIGHTS = ("auto", "none")


class TrainConfigError(CommandError):
    """A bad flag value, config file or key (exit code 2)."""


@dataclass(frozen=True)
class TrainConfig:
    """The hyper-parameters of a run. Defaults reproduce the original recipe's model on VGG16."""

    base: str = "vgg16"
    weights: str = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 5
    fine_tune_epochs: int = 0
    fine_tune_from: str = ""
    fine_tune_learning_rate: float = 1e-5
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    dense_units: int = 1024
    head: str = "flatten"
    batch_norm: bool = False
    augment: bool = False
    flip: bool = True
    rotation: float = 0.1
    zoom: float = 0.1
    translation: float = 0.1
    contrast: float = 0.1
    augment_views: int = 4
    feature_cache: bool = True
    early_stopping: int = 0
    class_weights: str = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    mixed_precision: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """Where a run reads and writes and how it reports; none of it changes the model or lands in its metadata."""

    data: str = ""
    name: str = ""
    models_dir: str = "models"
    runs_dir: str = "runs"
    feature_store: str = ""
    resume: bool = False
    json: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


HYPERPARAMETERS = tuple(item.name for item in fields(TrainConfig))
RUN_OPTIONS = tuple(item.name for item in fields(RunOptions))


HELP: dict[str, str] = {
    "base": "pretrained base network",
    "weights": "imagenet, none, or a path to a weights file for the base",
    "image_size": "square input size in pixels",
    "epochs": "epochs of phase 1 (frozen base, head only)",
    "fine_tune_epochs": "epochs of phase 2 (top of the base unfrozen); 0 skips it",
    "fine_tune_from": "first layer to unfreeze: a layer name prefix (vgg16: block5) or a number K = last K layers",
    "fine_tune_learning_rate": "constant learning rate of phase 2 (no schedule, no plateau reduction)",
    "optimizer": "optimizer of both phases",
    "momentum": "momentum of sgd and rmsprop",
    "nesterov": "Nesterov momentum (sgd)",
    "lr_schedule": "learning-rate schedule of phase 1 (phase 2 runs at the constant --fine-tune-learning-rate)",
    "weight_decay": "decoupled weight decay of the optimizer; 0 = none (adamw: 0 means AdamW's default 0.004)",
    "l2": "L2 penalty on the head's dense kernels",
    "dropout": "dropout rate before the output layer",
    "dense_units": "units of the hidden dense layer; 0 = none",
    "head": "flatten (the original recipe) or gap (global average pooling)",
    "batch_norm": "BatchNormalization after the hidden dense layer",
    "augment": "random flip/rotation/zoom/translation/contrast on the training split",
    "flip": "horizontal flips when augmenting",
    "rotation": "rotation strength (fraction of a turn) when augmenting",
    "zoom": "zoom strength when augmenting",
    "translation": "translation strength when augmenting",
    "contrast": "contrast strength when augmenting",
    "augment_views": "with --augment and the feature cache: K stored augmented views per training image",
    "feature_cache": "phase 1 on stored base features (with --augment: on K stored views); off = end to end",
    "feature_store": "persistent base-feature store folder (default: $TLSERVE_FEATURE_STORE, else RUNS_DIR/.features)",
    "early_stopping": "stop after this many epochs without a lower validation loss; 0 = off",
    "class_weights": "auto weighs classes by inverse frequency; none does not",
    "seed": "random seed (same seed, same machine: same model)",
    "resume": "continue the last run of this --name from its last checkpoint",
    "mixed_precision": "mixed_float16 compute (GPUs)",
    "runs_dir": "where run directories (checkpoints, logs, reports) go",
    "json": "print the result as JSON",
}
CHOICES = {
    "base": BASES,
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "head": HEADS,
    "class_weights": CLASS_WEIGHTS,
}


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file; a missing file or bad TOML is a TrainConfigError."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise TrainConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainConfigError(f"{path}: invalid TOML: {exc}") from None


def normalize_keys(values: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """`image-size` and `image_size` both name the field (of either part); anything else is an error."""
    known = {*HYPERPARAMETERS, *RUN_OPTIONS}
    normalized: dict[str, Any] = {}
    for key, value in values.items():
        field_name = key.replace("-", "_")
        if field_name not in known:
            raise TrainConfigError(f"{source}: unknown key {key!r}")
        normalized[field_name] = value
    return normalized


def build_run(
    file_values: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str = "config"
) -> tuple[TrainConfig, RunOptions]:
    """Defaults ← file ← flags, each value type-checked, split into hyper-parameters and run options, validated."""
    merged = normalize_keys(file_values, source=source)
    merged.update(normalize_keys({k: v for k, v in overrides.items() if v is not None}, source=source))
    types = {item.name: str(item.type) for item in (*fields(TrainConfig), *fields(RunOptions))}
    for key, value in merged.items():
        merged[key] = _coerce(key, value, types[key], source)
    config = TrainConfig(**{key: value for key, value in merged.items() if key in HYPERPARAMETERS})
    run = RunOptions(**{key: value for key, value in merged.items() if key in RUN_OPTIONS})
    validate(config)
    return config, run


def build_config(
    file_values: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str = "config"
) -> TrainConfig:
    """The hyper-parameters only (run options in the values are checked, then dropped)."""
    return build_run(file_values, overrides, source=source)[0]


def _coerce(key: str, value: Any, type_name: str, source: str) -> Any:
    if type_name == "bool":
        if isinstance(value, bool):
            return value
    elif type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif type_name == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, str | Path):
        return str(value)
    elif type_name == "str" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # fine_tune_from = 4 (last four layers)
    raise TrainConfigError(f"{source}: {key} must be a {type_name}, got {value!r}")


def validate(config: TrainConfig) -> None:
    """Reject values that would fail deep inside Keras with a traceback."""
    _choice("base", config.base, BASES)
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    _choice("head", config.head, HEADS)
    _choice("class_weights", config.class_weights, CLASS_WEIGHTS)
    positive = {"image_size": config.image_size, "batch_size": config.batch_size, "learning_rate": config.learning_rate}
    positive["fine_tune_learning_rate"] = config.fine_tune_learning_rate
    positive["augment_views"] = config.augment_views
    for key, number in positive.items():
        if number <= 0:
            raise TrainConfigError(f"{flag_name(key)} must be > 0, got {number}")
    if config.image_size < 32:
        raise TrainConfigError(f"--image-size must be at least 32 (the bases downsample 32x), got {config.image_size}")
    counts = {"epochs": config.epochs, "fine_tune_epochs": config.fine_tune_epochs}
    counts.update(dense_units=config.dense_units, early_stopping=config.early_stopping)
    for key, count in counts.items():
        if count < 0:
            raise TrainConfigError(f"{flag_name(key)} must be >= 0, got {count}")
    for key in ("dropout", "val_fraction", "test_fraction", "rotation", "zoom", "translation", "contrast"):
        rate = getattr(config, key)
        if not 0.0 <= rate < 1.0:
            raise TrainConfigError(f"{flag_name(key)} must be in [0, 1), got {rate}")
    if config.val_fraction + config.test_fraction >= 1.0:
        raise TrainConfigError("--val-fraction + --test-fraction must leave some training data")
    for key in ("weight_decay", "l2", "momentum"):
        if getattr(config, key) < 0:
            raise TrainConfigError(f"{flag_name(key)} must be >= 0")
    if config.fine_tune_epochs > 0 and config.fine_tune_from.isdigit() and int(config.fine_tune_from) == 0:
        raise TrainConfigError("--fine-tune-from 0 unfreezes nothing; give K >= 1 or a layer name")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainConfigError(f"{flag_name(key)} must be one of {', '.join(choices)}; got {value!r}")

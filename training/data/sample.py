"""A generated image dataset (coloured shapes on noisy backgrounds) that a small model can learn offline.

Each class is one shape; colour, size, position, rotation and background vary at random, so only the
shape tells the classes apart. The same seed writes byte-identical files. A marker file records that a
folder is a sample, so writing a new sample over an old one is safe and anything else is refused.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring")
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg")}
MARKER_FILE = ".tlserve-sample.json"
# Regular polygons and stars: (points, inner radius as a fraction of the outer one; 1.0 = no inner points).
_POLYGONS = {"square": (4, 1.0), "triangle": (3, 1.0), "hexagon": (6, 1.0), "star": (5, 0.45)}


class SampleError(ValueError):
    """The sample cannot be written as asked (bad arguments, or OUT holds something else)."""


@dataclass(frozen=True)
class SampleSpec:
    classes: int = 3
    per_class: int = 60
    size: int = 128
    seed: int = 0
    format: str = "png"


def _polygon(sides: int, cx: float, cy: float, radius: float, angle: float, inner: float = 1.0) -> list[float]:
    points: list[float] = []
    steps = sides * (2 if inner != 1.0 else 1)
    for step in range(steps):
        r = radius * (inner if step % 2 else 1.0)
        theta = angle + 2 * math.pi * step / steps
        points += [cx + r * math.cos(theta), cy + r * math.sin(theta)]
    return points


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: tuple[int, int, int],
) -> None:
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(radius / 3)))
    elif shape == "cross":
        width = max(2, int(radius / 2.5))
        for theta in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(theta), radius * math.sin(theta)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    elif shape == "diamond":  # a tall rhombus, never rotated, so it cannot pass for a turned square
        draw.polygon([cx, cy - radius, cx + 0.6 * radius, cy, cx, cy + radius, cx - 0.6 * radius, cy], fill=colour)
    else:
        sides, inner = _POLYGONS[shape]
        draw.polygon(_polygon(sides, cx, cy, radius, angle, inner), fill=colour)


def _tinted(lightness: float, rng: np.random.Generator) -> np.ndarray:
    """A random colour of roughly the given lightness (each channel scaled by 0.6-1.0)."""
    return np.clip(lightness * rng.uniform(0.6, 1.0, 3), 0, 255)


def render_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One size×size RGB image of `shape` at a random place, scale, angle and colour on a noisy background.

    Colours are random, but the shape is always clearly lighter or darker than its background: with random
    hues alone (no lightness contrast) a small CNN trained on 60 images per class overfits at chance level.
    """
    dark, light = rng.uniform(0, 90), rng.uniform(160, 255)
    background, foreground = (dark, light) if rng.random() < 0.5 else (light, dark)
    noise = rng.normal(0, 10, (size, size, 3))
    image = Image.fromarray(np.clip(_tinted(background, rng) + noise, 0, 255).astype(np.uint8), "RGB")
    red, green, blue = (int(channel) for channel in _tinted(foreground, rng))
    radius = size * rng.uniform(0.25, 0.42)
    cx, cy = rng.uniform(radius, size - radius, 2)
    _draw_shape(ImageDraw.Draw(image), shape, cx, cy, radius, rng.uniform(0, 2 * math.pi), (red, green, blue))
    return image


def _prepare_out(out: Path, force: bool) -> None:
    marker = out / MARKER_FILE
    if out.exists() and not out.is_dir():
        raise SampleError(f"{out} exists and is not a directory")
    if marker.is_file():
        for name in json.loads(marker.read_text()).get("classes", []):
            if (out / name).is_dir() and name in SHAPES:  # only folders an earlier sample wrote
                shutil.rmtree(out / name)
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise SampleError(f"{out} is not empty and holds no earlier sample; pass --force or choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)


def write_sample(out: Path, spec: SampleSpec, *, force: bool = False) -> dict[str, int]:
    """Write the dataset (one folder per shape) and return class → number of files."""
    if not 1 <= spec.classes <= len(SHAPES):
        raise SampleError(f"--classes must be between 1 and {len(SHAPES)}, got {spec.classes}")
    if spec.per_class < 1 or spec.size < 8:
        raise SampleError("--per-class must be at least 1 and --size at least 8")
    if spec.format not in FORMATS:
        raise SampleError(f"--format must be one of {sorted(FORMATS)}")
    try:
        return _write_files(out, spec, force)
    except OSError as exc:  # OUT under a file, unwritable, disk full: one line, not a traceback
        raise SampleError(f"cannot write the sample to {out}: {exc.strerror or exc}") from None


def _write_files(out: Path, spec: SampleSpec, force: bool) -> dict[str, int]:
    _prepare_out(out, force)
    pil_format, suffix = FORMATS[spec.format]
    counts = {}
    for label, shape in enumerate(SHAPES[: spec.classes]):
        (out / shape).mkdir()
        for index in range(spec.per_class):
            rng = np.random.default_rng([spec.seed, label, index])
            render_shape(shape, spec.size, rng).save(out / shape / f"{shape}_{index:04d}{suffix}", pil_format)
        counts[shape] = spec.per_class
    marker = {
        "classes": list(counts),
        "per_class": spec.per_class,
        "size": spec.size,
        "seed": spec.seed,
        "format": spec.format,
    }
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return counts

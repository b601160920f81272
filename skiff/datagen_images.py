"""Demo image sets made on the machine (no downloads): one drawn shape or pattern per class, plus broken files.

:func:`image_set` writes an ImageFolder layout (``<root>/<class>/<file>``; with ``splits`` also
``<root>/train/<class>/...`` and ``<root>/val/<class>/...``) of PNG and JPEG images whose class is the shape
drawn on them (position, size, colours and background noise vary), so a small network learns them in a few
epochs. With ``broken=True`` it adds one file of every kind image ingestion must catch and returns what it
wrote, so tests check each verdict: a truncated JPEG, a text file named ``.png``, an empty file, an image
below the minimum size, a PNG named ``.jpg``, an animated GIF, a palette PNG, a placeholder image repeated
in two classes, an exact copy inside one class and a file name with spaces and non-ASCII letters.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SHAPES", "BrokenFiles", "image_set", "draw"]

#: the classes :func:`image_set` can draw (``classes`` picks from them)
SHAPES = ("circle", "square", "triangle", "cross", "stripes")


@dataclass
class BrokenFiles:
    """What :func:`image_set` wrote: relative path -> the verdict ingestion must reach for it."""

    quarantined: dict[str, str] = field(default_factory=dict)  # path -> reason
    duplicates: list[str] = field(default_factory=list)  # dropped as exact copies inside their class
    converted: dict[str, str] = field(default_factory=dict)  # accepted, converted for training: path -> how
    accepted_odd_names: list[str] = field(default_factory=list)  # accepted despite their names
    good: int = 0  # well-formed images written (including the odd names and the converted ones)


def draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` RGB image (uint8 array) of ``shape`` on a noisy background."""
    from PIL import Image, ImageDraw

    background = rng.integers(0, 90, size=3)
    noise = rng.integers(-25, 25, size=(size, size, 3))
    base = np.clip(background + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    pen = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
    r = size * rng.uniform(0.22, 0.34)
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12) * size for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        w = max(2.0, r / 2.5)
        pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif shape == "stripes":
        step = max(3, size // 8)
        angle = rng.uniform(-0.3, 0.3)
        for k in range(-size, 2 * size, step * 2):
            dx = math.tan(angle) * size
            pen.polygon([(k, 0), (k + step, 0), (k + step + dx, size), (k + dx, size)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return np.asarray(img)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_set(root: str | Path, *, classes: tuple[str, ...] = ("circle", "square", "triangle"),
              per_class: int = 40, size: int = 48, seed: int = 0, splits: bool = False,
              val_fraction: float = 0.25, broken: bool = False) -> BrokenFiles:
    """Write a synthetic ImageFolder set under ``root``; returns what it wrote (see :class:`BrokenFiles`)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    out = BrokenFiles()
    n_val = int(round(per_class * val_fraction)) if splits else 0
    for name in classes:
        for i in range(per_class):
            split = ("val" if i < n_val else "train") if splits else ""
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            fmt = "PNG" if i % 2 else "JPEG"
            (folder / f"{name}_{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(
                _encode(draw(name, size, rng), fmt))
            out.good += 1
    if not broken:
        return out

    def where(cls: str) -> Path:
        return root / "train" / cls if splits else root / cls

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    first, second, third = (classes * 3)[:3]
    good_jpeg = _encode(draw(first, size, rng), "JPEG")
    p = where(first) / "truncated.jpg"
    # headers whole, the scan cut short: Pillow opens it and fails decoding the pixels
    p.write_bytes(good_jpeg[: good_jpeg.index(b"\xff\xda") + 40])
    out.quarantined[rel(p)] = "truncated_or_corrupt"
    p = where(second) / "notes.png"
    p.write_bytes(b"this is a text file, not an image\n" * 4)
    out.quarantined[rel(p)] = "not_an_image"
    p = where(third) / "empty.jpg"
    p.write_bytes(b"")
    out.quarantined[rel(p)] = "empty_file"
    p = where(third) / "tiny.png"
    p.write_bytes(_encode(draw(third, 8, rng), "PNG"))
    out.quarantined[rel(p)] = "too_small"
    p = where(second) / "really_a_png.jpg"
    p.write_bytes(_encode(draw(second, size, rng), "PNG"))
    out.quarantined[rel(p)] = "extension_mismatch"
    # a "not found" placeholder a scraper saved under both classes: its label means nothing
    placeholder = _encode(np.full((size, size, 3), 200, np.uint8), "PNG")
    for cls in (first, second):
        p = where(cls) / "image not found.png"
        p.write_bytes(placeholder)
        out.quarantined[rel(p)] = "duplicate_across_classes"
    # an exact copy inside one class: kept once
    original = sorted(where(first).glob(f"{first}_*.png"))[0]
    p = where(first) / "copy of first.png"
    p.write_bytes(original.read_bytes())
    out.duplicates.append(rel(p))
    frames = [Image.fromarray(draw(third, size, rng)) for _ in range(2)]
    p = where(third) / "animated.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out.converted[rel(p)] = "animated->first frame"
    out.good += 1
    p = where(second) / "palette.png"
    Image.fromarray(draw(second, size, rng)).convert("P", palette=Image.Palette.ADAPTIVE).save(p)
    out.converted[rel(p)] = "palette->RGB"
    out.good += 1
    p = where(first) / "größe 1 — ünïcode.png"
    p.write_bytes(_encode(draw(first, size, rng), "PNG"))
    out.accepted_odd_names.append(rel(p))
    out.good += 1
    return out

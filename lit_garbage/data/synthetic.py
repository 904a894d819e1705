"""A small, deterministic, learnable stand-in for the garbage dataset (no download needed).

Each of the ten classes gets its own shape and colour family drawn at a random position, size and
rotation over a noisy background, written as JPEG into an ImageFolder layout. A network can learn
it in a few CPU epochs, which is what the demo run and the tests need.

    python -m lit_garbage.data.synthetic data/synthetic --per-class 30
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The recipe's ten classes; real datasets bring their own names from their folders.
GARBAGE_CLASSES = ("battery", "biological", "cardboard", "clothes", "glass",
                   "metal", "paper", "plastic", "shoes", "trash")

# (shape, base RGB colour) per class: distinct enough to learn quickly, varied enough not to be trivial.
_STYLES = (
    ("rectangle", (200, 40, 40)),
    ("ellipse", (60, 160, 60)),
    ("triangle", (170, 120, 60)),
    ("cross", (60, 60, 200)),
    ("ring", (120, 200, 220)),
    ("stripes", (150, 150, 160)),
    ("square", (235, 235, 225)),
    ("diamond", (220, 200, 40)),
    ("star", (120, 60, 160)),
    ("blobs", (80, 80, 80)),
)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        n, radii = 3, [r]
    elif kind == "diamond":
        n, radii = 4, [r, r * 0.55]
    elif kind == "star":
        n, radii = 10, [r, r * 0.45]
    else:  # square
        n, radii = 4, [r]
    return [(cx + radii[i % len(radii)] * math.cos(angle + 2 * math.pi * i / n),
             cy + radii[i % len(radii)] * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]


def draw_sample(class_index: int, rng: np.random.Generator, size: int = 128) -> Image.Image:
    kind, base = _STYLES[class_index % len(_STYLES)]
    background = rng.integers(0, 256, 3)
    noise = rng.normal(0, 18, (size, size, 3))
    arr = np.clip(background * 0.35 + 90 + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(im)
    colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in base)
    r = size * rng.uniform(0.22, 0.38)
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "rectangle":
        draw.rectangle((cx - r, cy - r * 0.5, cx + r, cy + r * 0.5), fill=colour)
    elif kind == "ellipse":
        draw.ellipse((cx - r, cy - r * 0.7, cx + r, cy + r * 0.7), fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=max(3, int(r * 0.3)))
    elif kind == "cross":
        w = r * 0.3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif kind == "stripes":
        for k in range(-3, 4):
            off = k * r * 0.3
            draw.line((cx - r, cy + off - r * 0.3, cx + r, cy + off + r * 0.3), fill=colour, width=max(2, int(r * 0.12)))
    elif kind == "blobs":
        for _ in range(6):
            bx, by = rng.uniform(0, size, 2)
            br = rng.uniform(size * 0.05, size * 0.12)
            draw.ellipse((bx - br, by - br, bx + br, by + br), fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=colour)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))


def generate(out: str | Path, per_class: int = 30, size: int = 128, seed: int = 0,
             class_names: tuple[str, ...] = GARBAGE_CLASSES) -> Path:
    """Write `per_class` JPEGs per class under out/<class>/; the same seed gives the same files."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out = Path(out)
    for ci, name in enumerate(class_names):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, ci])
        for i in range(per_class):
            draw_sample(ci, rng, size).save(folder / f"{name}_{i:04d}.jpg", quality=92)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output folder (ImageFolder layout)")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = generate(args.out, args.per_class, args.size, args.seed)
    print(f"wrote {args.per_class * len(GARBAGE_CLASSES)} images in {len(GARBAGE_CLASSES)} classes to {path}")


if __name__ == "__main__":
    main()

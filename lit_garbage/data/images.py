"""The image-file contract every stage shares: decode to 8-bit RGB, resize, scale to [0, 1].

    image = load_rgb(path)            # PIL RGB: EXIF orientation applied, alpha on white, 16-bit scaled
    x = model_input(image, size)      # float32 CHW [0, 1] at size x size (PIL's antialiased bilinear resize)

PIL and numpy only: the training transforms (`transforms.eval_transform`) resize with the same PIL call, so a
torch-free install (`lite`) feeds a model exactly what training and every other backend feed it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# What the dataset scan and predict read: torchvision ImageFolder's extensions plus the other formats Pillow
# reads out of the box (tests/data/test_data.py checks that torchvision's are all here).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jfif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
DEFAULT_IMAGE_SIZE = 224  # the seed's input size (SPEC.md): every image resized to 224 x 224
MIN_IMAGE_SIZE = 32  # MobileNetV2 downsamples 32x; smaller inputs end with an empty feature map
# The resize of the contract: bilinear with antialiasing (PIL widens the filter when it shrinks), the whole
# image stretched to a square (no crop). Clients that resize themselves without antialiasing (MediaPipe)
# should be handed images already resized this way.
RESAMPLE = Image.Resampling.BILINEAR

# Images larger than this (longest side, pixels) are decoded at a reduced scale: JPEGs through the
# decoder's DCT scaling (`draft`, 1/2 .. 1/8, never below this size), others by an integer `reduce`.
# Models see at most a few hundred pixels, so nothing is lost, and an 8000x6000 photo costs
# ~4x less memory and time. PIL's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on.
MAX_DECODE_SIDE = 2048
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def shown(name: str | Path) -> str:
    """A file name as text for messages and reports: bytes that are not UTF-8 appear as \\xNN.

    Python keeps such bytes of a file name as lone surrogates (PEP 383), which open() accepts but a UTF-8
    terminal or file refuses: `caf\\udce9.jpg` is shown as `caf\\xe9.jpg`.
    """
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file as 8-bit RGB: EXIF orientation applied, alpha composited on white,
    16-bit samples scaled (65535 -> 255), CMYK / palette / greyscale converted, huge images reduced.

    Raises the decoder's own error (OSError, ValueError, Image.DecompressionBombError, ...) for a
    file that cannot be read; the dataset scan (`lit_garbage.data.manifest`) turns those into skipped.csv rows.
    """
    with Image.open(path) as im:
        longest = max(im.size)
        if longest > MAX_DECODE_SIDE and im.format == "JPEG":
            im.draft(None, (MAX_DECODE_SIDE, MAX_DECODE_SIDE))
        im.load()
        if max(im.size) > MAX_DECODE_SIDE:
            factor = max(im.size) // MAX_DECODE_SIDE
            if factor > 1:
                im = im.reduce(factor) if im.mode not in ("P", "1") else im.convert("RGBA").reduce(factor)
        im = ImageOps.exif_transpose(im)
        if im.mode in _SIXTEEN_BIT or im.mode in ("I", "F"):
            # 16-bit greyscale: a fixed 65535 -> 255 scale (not a per-image stretch, which would
            # brighten a dark photo). 32-bit int / float data beyond 16 bits is scaled by its maximum.
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if (im.mode in _SIXTEEN_BIT or 255 < arr.max() <= 65535) else max(arr.max(), 255.0)
            if im.mode == "F" and arr.max() <= 1.0:
                top = 1.0
            im = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "La", "RGBa"):
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im.convert("RGBA"))
        return im.convert("RGB")


def resize_rgb(image: Image.Image, image_size: int) -> Image.Image:
    """The contract's resize: `image` stretched to image_size x image_size, bilinear, antialiased."""
    return image.resize((image_size, image_size), RESAMPLE)


def model_input(image: Image.Image, image_size: int) -> np.ndarray:
    """float32 CHW RGB in [0, 1] at image_size x image_size: what every model of this project is fed."""
    pixels = np.asarray(resize_rgb(image, image_size), dtype=np.uint8)
    # x * float32(1/255), as torchvision's ToDtype(scale=True) computes it: the same float32 bits as training.
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) * np.float32(1.0 / 255)

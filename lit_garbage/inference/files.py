"""Image files -> model inputs -> probabilities, with any backend: what `predict` and `evaluate` share.

Every image goes through the project's one preprocessing contract (`images.load_rgb` + `images.model_input`)
whatever the backend. A file that cannot be read (not an image, truncated, ...) or a folder without
images gets one clear line and the rest of the batch still runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lit_garbage.data.images import IMAGE_EXTENSIONS, load_rgb, model_input

DEFAULT_BATCH = 64


@dataclass
class LoadError:
    path: Path
    message: str


@dataclass
class Collected:
    files: list[Path] = field(default_factory=list)
    problems: list[LoadError] = field(default_factory=list)


def collect_images(inputs: Iterable[str | Path]) -> Collected:
    """Image files named or found (recursively, by extension) in folders, in a stable order, deduplicated.

    A file named explicitly is always tried whatever its extension. Every input is used or becomes a problem
    line with its reason: a missing path, a folder without images, a FIFO / device / socket or a dangling link
    (named, or found in a folder under an image name), a path that cannot be read.
    """
    out = Collected()
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        try:
            if path.is_dir():
                found, odd = _images_in(path)
                out.problems += odd
                if not found and not odd:
                    out.problems.append(LoadError(path, f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
                candidates = found
            elif path.is_file():
                candidates = [path]
            else:
                out.problems.append(LoadError(path, _not_a_file(path)))
                continue
        except OSError as err:  # a path inside a folder this user may not read
            out.problems.append(LoadError(path, f"cannot be read: {err.strerror or err}"))
            continue
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.files.append(p)
    return out


def _not_a_file(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a link to a file that does not exist"
    return "not a regular file (a FIFO, device or socket)" if path.exists() else "no such file or folder"


def _images_in(folder: Path) -> tuple[list[Path], list[LoadError]]:
    """(image files under `folder`, problems of entries named like images that are not files); hidden skipped."""
    found, odd = [], []
    for p in folder.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        try:
            if p.is_file():
                found.append(p)
            elif not p.is_dir():
                odd.append(LoadError(p, _not_a_file(p)))
        except OSError as err:
            odd.append(LoadError(p, f"cannot be read: {err.strerror or err}"))
    return sorted(found), odd


def image_note(path: Path) -> str | None:
    """A note on what the contract converted (CMYK, 16-bit, alpha, palette), or None for plain 8-bit RGB / grey."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
    except Exception:
        return None
    return {
        "CMYK": "CMYK converted to RGB",
        "I;16": "16-bit greyscale scaled to 8-bit RGB", "I;16B": "16-bit greyscale scaled to 8-bit RGB",
        "I;16L": "16-bit greyscale scaled to 8-bit RGB", "I": "32-bit greyscale scaled to 8-bit RGB",
        "RGBA": "alpha composited on white", "LA": "alpha composited on white", "P": "palette converted to RGB",
        "L": "greyscale converted to RGB", "YCbCr": None, "RGB": None,
    }.get(mode, f"{mode} converted to RGB")


def load_one(path: Path, image_size: int) -> tuple[np.ndarray | None, str | None]:
    """(CHW float32 [0, 1] array, None) or (None, a one-line reason) for one file, through the contract."""
    from PIL import Image

    try:
        return model_input(load_rgb(path), image_size), None
    except Image.UnidentifiedImageError:
        return None, "not an image file (or a format Pillow cannot read)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        text = str(err) or type(err).__name__
        if "truncated" in text.lower():
            text = f"truncated or corrupted image data ({text})"
        return None, f"cannot decode image: {text}"


def load_batch(paths: Sequence[Path], image_size: int, progress: Callable[[int], None] | None = None
               ) -> tuple[np.ndarray, list[int], list[LoadError]]:
    """(images (M, 3, S, S), indices into `paths` of the M loaded ones, errors of the others)."""
    arrays, ok, errors = [], [], []
    for i, p in enumerate(paths):
        arr, err = load_one(p, image_size)
        if err is None:
            arrays.append(arr)
            ok.append(i)
        else:
            errors.append(LoadError(p, err))
        if progress:
            progress(1)
    images = np.stack(arrays) if arrays else np.empty((0, 3, image_size, image_size), np.float32)
    return images, ok, errors


def predict_files(backend, paths: Sequence[Path], batch_size: int = DEFAULT_BATCH,
                  on_error: Callable[[LoadError], None] | None = None, description: str = "predicting",
                  console=None) -> tuple[list[int], np.ndarray, list[LoadError]]:
    """Run `backend` over image files in batches with a progress bar.

    Returns (indices of the predicted files, their probabilities (M, C), load errors).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    indices: list[int] = []
    rows: list[np.ndarray] = []
    errors: list[LoadError] = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images, ok, errs = load_batch(chunk, backend.image_size, lambda n: bar.advance(task, n))
            for e in errs:
                errors.append(e)
                if on_error:
                    on_error(e)
            if len(ok):
                rows.append(backend.predict(images))
                indices.extend(start + i for i in ok)
    probs = np.concatenate(rows) if rows else np.empty((0, backend.num_classes), np.float32)
    return indices, probs, errors


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the k (label, probability) pairs with the highest probability, best first (ties: lower index)."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(class_names[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]

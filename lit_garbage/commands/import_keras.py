"""`lit-garbage import-keras` (alias `scripts/import_keras.py`): a Keras MobileNetV2 as a checkpoint.

See `lit_garbage.models.keras_backbone` for the supported files and `lit_garbage.training.keras_import`
for what is imported. Exit status: 0 written; 2 the file is not a Keras model this importer supports.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch

from lit_garbage.data.images import DEFAULT_IMAGE_SIZE
from lit_garbage.models.keras_backbone import KerasImportError, load_keras_model
from lit_garbage.training.keras_import import (
    INPUT_RANGES,
    compare_with_keras,
    import_keras,
    save_checkpoint,
)


def read_class_names(option: Sequence[str] | None, labels_file: str | None) -> list[str] | None:
    """Class names from `--class-names a b c` / `--class-names a,b,c` or a labels file (one per line or JSON)."""
    if option and labels_file:
        raise SystemExit("error: pass either --class-names or --labels, not both")
    if option:
        return [name.strip() for item in option for name in item.split(",") if name.strip()]
    if labels_file:
        import json

        text = Path(labels_file).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return [line.strip() for line in text.splitlines() if line.strip()]
        if isinstance(data, dict):  # {"0": "battery", ...} or {"battery": 0, ...}
            if all(isinstance(v, int) for v in data.values()):
                return [k for k, _ in sorted(data.items(), key=lambda kv: kv[1])]
            return [data[k] for k in sorted(data, key=int)]
        return [str(x) for x in data]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lit-garbage import-keras",
        description="Import a Keras MobileNetV2 (alpha 1.0, with or without the seed's head) from a .keras, "
                    ".h5 or Keras 2 SavedModel into a GarbageClassifier checkpoint that evaluate/export/fit use.")
    parser.add_argument("model_file", help=".keras / .h5 file or Keras 2 SavedModel directory")
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. model.ckpt)")
    parser.add_argument("--class-names", nargs="+", default=None,
                        help="class names in the order of the Keras model's outputs (space or comma separated)")
    parser.add_argument("--labels", default=None, help="labels file: one class name per line, or a JSON list/dict")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"input size recorded in the checkpoint (default: the Keras model's, else {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--input-range", choices=["auto", *INPUT_RANGES], default="auto",
                        help="what the Keras model was fed: unit = [0, 1] pixels (the seed notebook), symmetric = "
                             "[-1, 1] (mobilenet_v2.preprocess_input, ImageNet weights); auto = unit with the "
                             "seed's head, symmetric without")
    parser.add_argument("--check-images", default=None,
                        help="folder of images to compare Keras and torch on (default: 4 random images)")
    parser.add_argument("--no-check", action="store_true", help="skip the Keras/torch comparison")
    args = parser.parse_args(argv)

    warnings.simplefilter("default")
    try:
        keras_model = load_keras_model(args.model_file)
        names = read_class_names(args.class_names, args.labels)
        module, found = import_keras(args.model_file, class_names=names, image_size=args.image_size,
                                     input_range=args.input_range, keras_model=keras_model)
    except (KerasImportError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=__import__("sys").stderr)
        return 2
    size = module.hparams.image_size
    print(f"read {args.model_file}: Keras MobileNetV2 '{found.model_name}', input {found.input_size or 'any'} px")
    print(f"  head: {', '.join(found.head_layers) or 'none'} -> "
          f"{'imported (seed head)' if found.has_seed_head else 'NOT imported: new random head'}")
    for note in found.notes:
        print(f"  note: {note}")
    print(f"  {len(module.class_names)} classes: {', '.join(module.class_names)}")
    print(f"  input: [0, 1] RGB at {size} px, normalised inside the model with mean {module.normalisation['mean']}"
          f" std {module.normalisation['std']} ({module.keras_source['input_range']})")
    if not args.no_check and not any("before the backbone" in n for n in found.notes):
        images = _check_images(args.check_images, size)
        diffs = compare_with_keras(keras_model, module, found, images)
        print("  Keras vs torch on " + f"{len(images)} images: " +
              ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    out = save_checkpoint(module, args.out)
    print(f"wrote {out}")
    return 0


def _check_images(folder: str | None, size: int) -> torch.Tensor:
    if folder is None:
        return torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    from lit_garbage.data.images import IMAGE_EXTENSIONS, load_rgb
    from lit_garbage.data.transforms import eval_transform

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:16]
    if not files:
        raise SystemExit(f"error: no images under {folder}")
    tf = eval_transform(size)
    return torch.stack([tf(load_rgb(p)) for p in files])


if __name__ == "__main__":
    raise SystemExit(main())

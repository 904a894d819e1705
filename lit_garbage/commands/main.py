"""`lit-garbage`: one command, a subcommand per step of a model's life.

    lit-garbage fit --config configs/seed.yaml --data.root DATA      # train (LightningCLI)
    lit-garbage int8-finetune --model RUN/model.ckpt --out X.ckpt   # weights on the int8 grid
    lit-garbage export --model RUN/model.ckpt                       # every format, verified
    lit-garbage evaluate --model RUN/export/model_int8.tflite        # the seed's report
    lit-garbage predict --model RUN/export/model.onnx photos/       # top-k per image
    lit-garbage parity --export RUN/export                          # every format on the test split
    lit-garbage audit DATA --out audit/                              # wrong labels, outliers, twins
    lit-garbage serve --export RUN/export                            # the browser demo
    lit-garbage import-keras seed.h5 --out model.ckpt                # a Keras MobileNetV2 as a checkpoint
    lit-garbage bench                                                # the lab: speed against the seed's Keras

Each subcommand is a module with `main(argv) -> exit status` and its own `--help`. Subcommands are named
here by module path and imported only when run, so `lit-garbage predict` on a `.tflite` file never loads
torch or TensorFlow, and the product never imports the lab.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# name -> (module with `main(argv)`, one line of help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("lit_garbage.commands.fit", "train a model (LightningCLI: --config, --data.*, --model.*, --trainer.*)"),
    "int8-finetune": ("lit_garbage.commands.int8_finetune",
                      "a checkpoint fine-tuned with its weights on TFLite's int8 grid, for a lossless int8 export"),
    "export": ("lit_garbage.commands.export",
               "a checkpoint to ONNX, SavedModel, TFLite (fp32, fp16, int8) and TFJS, each verified against torch"),
    "evaluate": ("lit_garbage.commands.evaluate",
                 "accuracy and per-class precision / recall / F1 of any model file on its run's split"),
    "predict": ("lit_garbage.commands.predict", "top-k classes for image files and folders with any model file"),
    "parity": ("lit_garbage.commands.parity",
               "every format of an export scored on the same photos: accuracy, agreement with torch, latency"),
    "audit": ("lit_garbage.commands.audit",
              "the photos that mislead a model: suspected wrong labels, outliers, duplicates, twins in another folder"),
    "serve": ("lit_garbage.commands.serve", "the browser demo of an export (TensorFlow.js), served locally"),
    "import-keras": ("lit_garbage.commands.import_keras",
                     "a Keras MobileNetV2 (.keras, .h5, SavedModel) as a checkpoint of this project"),
    "bench": ("lit_garbage.lab.bench", "lab: speed of this project against the seed's Keras recipe, side by side"),
    "bench-gpu": ("lit_garbage.lab.bench_gpu", "lab: training throughput on one GPU under the speed switches"),
    "compare-keras": ("lit_garbage.lab.compare_keras", "lab: the seed recipe trained here and with Keras, same split"),
    "ablate": ("lit_garbage.lab.ablate", "lab: the improved recipe's ablation, one change per row"),
    "cv": ("lit_garbage.lab.cv", "lab: recipes compared by k-fold cross-validation and on an independent test set"),
    "latency": ("lit_garbage.lab.latency", "lab: single-image latency of model files side by side on this machine"),
}

# The extra of pyproject.toml that brings a third-party package: what to install when a command needs it.
EXTRA_OF = {
    "ai_edge_litert": "lite", "sklearn": "lite", "matplotlib": "lite",
    "torch": "train", "torchvision": "train", "lightning": "train", "timm": "train", "torchmetrics": "train",
    "safetensors": "train",
    "onnx": "train", "onnxruntime": "train", "onnxscript": "train", "imagehash": "train", "yaml": "train",
    "tensorflow": "export", "keras": "export", "tf_keras": "export", "onnx2tf": "export", "onnxsim": "export",
    "tensorflowjs": "tfjs", "psutil": "lab", "cleanlab": "train",
}


def usage() -> str:
    from lit_garbage import __version__

    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items())
    return (f"usage: lit-garbage <command> [options]   (lit-garbage <command> --help for its options)\n\n"
            f"lit-garbage {__version__}: train and ship a household-garbage image classifier.\n\n"
            f"commands:\n{rows}\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from lit_garbage import __version__

        print(f"lit-garbage {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"lit-garbage: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(SUBCOMMANDS[name][0])
        return int(module.main(rest) or 0)
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package not in EXTRA_OF:
            raise
        print(f"lit-garbage {name}: this needs the package '{package}', which this installation lacks: "
              f"pip install 'lit-garbage[{EXTRA_OF[package]}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`lit-garbage export` (alias `scripts/export_all.py`): one command, every format, verified.

Exit status: 0 exported (and verified, unless --verify false); 1 a verification threshold was broken
(the export is in place with verify.md saying which); 2 the export could not be made.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Literal

from lit_garbage.commands.options import OLD_DATA_SPELLINGS, quiet_tensorflow

if TYPE_CHECKING:
    from lit_garbage.export.config import ExportConfig

EPILOG = """examples:
  # every format into runs/demo/export, verified on the run's test images
  lit-garbage export --model runs/demo/model.ckpt

  # only ONNX + TFLite, more calibration images, more of the int8 file float, own output folder
  lit-garbage export --model runs/demo/model.ckpt --formats onnx tflite int8 \\
      --int8.calib_images 200 --int8.float_convs 16 --out dist/garbage

  # the options as a file: write every one, edit, export with it (flags after --config override it)
  lit-garbage export --model runs/demo/model.ckpt --print_config > export.yaml
  lit-garbage export --config export.yaml --int8.float_convs 16

  # dataset moved since training
  lit-garbage export --model runs/demo/model.ckpt --data.root /data/garbage

formats: onnx (model.onnx), saved_model (saved_model/), tflite (model_float32.tflite, model_float16.tflite),
int8 (model_int8.tflite), tfjs (tfjs/model.json); only when asked for: int16x8 (model_int16x8.tflite, int16
activations and int8 weights: from an `int8-finetune` checkpoint the size of int8 with the answers of float, but
LiteRT runs it about 30x slower than float32 on CPU). A format brings in what it is built from
(tfjs and tflite need saved_model, which needs onnx). metadata.json and labels.txt are always written, and the
same facts go into every model file (TFLite Metadata, ONNX metadata_props, SavedModel assets.extra/, TFJS
userDefinedMetadata), so a file copied alone still knows its class names; MediaPipe loads the .tflite files as
they are. TFLite Metadata needs `pip install --no-deps tflite-support==0.4.4` (or --tflite_metadata false).
TFJS verification runs in Node: install Node 18+ and run `npm ci` in the project root.
"""


# Spellings of earlier releases, still read, not listed: old -> new (`--key=value`: a flag that takes no value).
OLD_SPELLINGS = {
    "--ckpt": "--model", **OLD_DATA_SPELLINGS,
    "--calib-images": "--int8.calib_images", "--int8-ranges": "--int8.ranges",
    "--int8-float-convs": "--int8.float_convs",
    "--int8-float-classifier": "--int8.float_classifier=true",
    "--no-int8-float-classifier": "--int8.float_classifier=false",
    "--verify-images": "--verify_images", "--no-verify": "--verify=false", "--model-name": "--model_name",
    "--model-version": "--model_version", "--no-tflite-metadata": "--tflite_metadata=false",
}


def build_parser():
    from lit_garbage.commands.parsing import config_parser
    from lit_garbage.export.config import ExportConfig
    from lit_garbage.export.exporter import ALL_FORMATS, DEFAULT_FORMATS

    p = config_parser(
        ExportConfig, prog="lit-garbage export",
        description="Export a lit_garbage checkpoint to ONNX, TensorFlow SavedModel, TFLite (float32, float16, int8)\n"
                    "and TensorFlow.js, then verify every file against the torch model. Every option can also come\n"
                    "from a YAML file: --print_config writes one, --config reads it (flags after it win).",
        epilog=EPILOG, skip={"formats"}, renamed=OLD_SPELLINGS)
    p.add_argument("--formats", nargs="+", type=Literal[ALL_FORMATS], default=list(DEFAULT_FORMATS), metavar="FORMAT",
                   help="formats to export, with what they are built from (int16x8 only when asked for)")
    return p


def main(argv: list[str] | None = None) -> int:
    from lit_garbage.commands.parsing import config_problems, make_config
    from lit_garbage.export.config import ALL_RULES, ExportConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    broken = config_problems(parser, argv, args, ALL_RULES)
    for problem in broken:
        print(f"error: {problem}", file=sys.stderr)
    if broken:
        return 2
    config = make_config(parser, args, ExportConfig)
    quiet_tensorflow(verbose=config.verbose)  # --verbose: TensorFlow's own logs too
    # SIGTERM unwinds like Ctrl-C, so the partial folder is removed and the old export stays.
    if threading.current_thread() is not threading.main_thread():
        return _run(config)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _run(config)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(config: ExportConfig) -> int:
    from lit_garbage.export.exporter import Exporter, ExportError
    from lit_garbage.export.references import INT8, INT16X8
    from lit_garbage.export.tensorflow import ConversionError
    from lit_garbage.inference.backends import ModelFileError

    try:
        exporter = Exporter(config)
        result = exporter.run()
    except (ModelFileError, ExportError, ConversionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was replaced", file=sys.stderr)
        return 130
    for e in exporter.embedded:
        if not e.where:
            print(f"warning: {e.file}: {e.note}", file=sys.stderr)
    if result.report is None:
        print("verification skipped (--verify false)")
        return 0
    print(result.report.to_markdown())
    if not result.report.passed:
        print(f"error: verification failed: {result.report.verdict()} (see {result.out}/verify.md)", file=sys.stderr)
        failed = {r.name for r in result.report.results if r.status == "fail"}
        if failed & {*INT8, *INT16X8} and not exporter.weights_on_int8_grid:
            # An int8-ready checkpoint is a new model: its answers differ from this one's on a few % of photos
            # (docs/results/2026-12-03-int8.md), so it is offered, not prescribed.
            print(f"hint: the weights of {config.model} are not on the int8 grid, and rounding them loses answers; "
                  "keep more of the int8 file float (--int8.float_convs), or make an int8-exact model: "
                  f"`lit-garbage int8-finetune --model {config.model} --out READY.ckpt`, then `lit-garbage export "
                  "--model READY.ckpt` (a fine-tuned model: compare both with `lit-garbage evaluate`)",
                  file=sys.stderr)
        return 1
    for r in result.report.skipped:
        print(f"warning: {r.name} was NOT verified: {r.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

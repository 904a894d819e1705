"""`lit-garbage export` (alias `scripts/export_all.py`): one command, every format, verified.

Exit status: 0 exported (and verified, unless --no-verify); 1 a verification threshold was broken
(the export is in place with verify.md saying which); 2 the export could not be made.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from lit_garbage.checks import Rule
from lit_garbage.commands.options import add_data, add_model, option_problems, parse_args, quiet_tensorflow, whole

EPILOG = """examples:
  # every format into runs/demo/export, verified on the run's test images
  lit-garbage export --model runs/demo/model.ckpt

  # only ONNX + TFLite, more calibration images, own output folder
  lit-garbage export --model runs/demo/model.ckpt --formats onnx tflite int8 \\
      --calib-images 200 --out dist/garbage

  # dataset moved since training
  lit-garbage export --model runs/demo/model.ckpt --data.root /data/garbage

formats: onnx (model.onnx), saved_model (saved_model/), tflite (model_float32.tflite, model_float16.tflite),
int8 (model_int8.tflite), tfjs (tfjs/model.json); only when asked for: int16x8 (model_int16x8.tflite, int16
activations and int8 weights: from an `int8-finetune` checkpoint the size of int8 with the answers of float, but
LiteRT runs it about 30x slower than float32 on CPU). A format brings in what it is built from
(tfjs and tflite need saved_model, which needs onnx). metadata.json and labels.txt are always written, and the
same facts go into every model file (TFLite Metadata, ONNX metadata_props, SavedModel assets.extra/, TFJS
userDefinedMetadata), so a file copied alone still knows its class names; MediaPipe loads the .tflite files as
they are. TFLite Metadata needs `pip install --no-deps tflite-support==0.4.4` (or --no-tflite-metadata).
TFJS verification runs in Node: install Node 18+ and run `npm ci` in the project root.
"""


def build_parser() -> argparse.ArgumentParser:
    from lit_garbage.export.exporter import ALL_FORMATS, DEFAULT_FORMATS

    p = argparse.ArgumentParser(
        prog="lit-garbage export",
        description="Export a lit_garbage checkpoint to ONNX, TensorFlow SavedModel, TFLite (float32, float16, "
                    "int8) and TensorFlow.js, then verify every file against the torch model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p, "checkpoint of a `lit-garbage fit` run (e.g. RUN/model.ckpt)", old=("--ckpt",))
    p.add_argument("--out", default=None, help="output folder (default: RUN/export); replaced atomically")
    p.add_argument("--formats", nargs="+", choices=ALL_FORMATS, default=list(DEFAULT_FORMATS), metavar="FORMAT",
                   help=f"formats to export: {' '.join(ALL_FORMATS)} (default: all but int16x8)")
    p.add_argument("--calib-images", type=int, default=100,
                   help="training-split images used to calibrate int8 (default: 100)")
    from lit_garbage.int8.ranges import (
        DEFAULT_FLOAT_CLASSIFIER,
        DEFAULT_FLOAT_CONVOLUTIONS,
        DEFAULT_RANGES,
        RANGE_CHOICES,
    )

    p.add_argument("--int8-ranges", choices=RANGE_CHOICES, default=DEFAULT_RANGES,
                   help="int8 activation ranges: minmax (the calibrator's), mse (least squared error, every op "
                        "output) or mse-signed (only tensors taking negative values); default: "
                        f"{DEFAULT_RANGES}")
    p.add_argument("--int8-float-convs", type=int, default=DEFAULT_FLOAT_CONVOLUTIONS, metavar="N",
                   help="the int8 file stays float32 up to its N-th convolution (input normalisation, stem, first "
                        "blocks): closer to float and faster on CPU (docs/int8.md); 0: int8 from the input; "
                        f"default: {DEFAULT_FLOAT_CONVOLUTIONS}")
    p.add_argument("--int8-float-classifier", action=argparse.BooleanOptionalAction, default=DEFAULT_FLOAT_CLASSIFIER,
                   help="keep the int8 file's last dense layer and softmax float32 (int8 probabilities sit on 256 "
                        "levels, where near ties collapse; docs/int8.md); default: on")
    from lit_garbage.export.references import VERIFY_IMAGES

    p.add_argument("--verify-images", type=int, default=VERIFY_IMAGES,
                   help=f"test-split images run through every backend (default: {VERIFY_IMAGES}; the int8 check "
                        "tightens with more)")
    p.add_argument("--no-verify", action="store_true", help="skip verification (experts only)")
    add_data(p, "dataset folder, if it moved since training")
    p.add_argument("--model-name", default=None, help="name written into every model file (default: lit-garbage)")
    p.add_argument("--model-version", default=None,
                   help="version written into every model file (default: the lit-garbage version)")
    p.add_argument("--no-tflite-metadata", action="store_true",
                   help="write the .tflite files without TFLite Metadata (no tflite-support needed; MediaPipe "
                        "and the LiteRT Task Library then cannot load them)")
    p.add_argument("--verbose", action="store_true", help="show the converters' own logs")
    return p


EXPORT_RULES = (
    Rule("--calib-images", *whole(1, 100_000)),
    Rule("--verify-images", *whole(1, 100_000)),
    Rule("--int8-float-convs", *whole(0, 1000)),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    broken = option_problems(args, EXPORT_RULES)
    for problem in broken:
        print(f"error: {problem}", file=sys.stderr)
    if broken:
        return 2
    quiet_tensorflow(verbose=args.verbose)  # --verbose: TensorFlow's own logs too
    # SIGTERM unwinds like Ctrl-C, so the partial folder is removed and the old export stays.
    if threading.current_thread() is not threading.main_thread():
        return _run(args)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from lit_garbage.export.exporter import Exporter, ExportError
    from lit_garbage.export.references import INT8, INT16X8
    from lit_garbage.export.tensorflow import ConversionError
    from lit_garbage.inference.backends import ModelFileError

    try:
        exporter = Exporter(args.model, out=args.out, formats=args.formats, calib_images=args.calib_images,
                            verify_images=args.verify_images, verify=not args.no_verify,
                            data_root=args.data_root, manifest=args.manifest, verbose=args.verbose,
                            model_name=args.model_name, model_version=args.model_version,
                            tflite_metadata=not args.no_tflite_metadata, int8_ranges=args.int8_ranges,
                            int8_float_convolutions=args.int8_float_convs,
                            int8_float_classifier=args.int8_float_classifier)
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
        print("verification skipped (--no-verify)")
        return 0
    print(result.report.to_markdown())
    if not result.report.passed:
        print(f"error: verification failed: {result.report.verdict()} (see {result.out}/verify.md)", file=sys.stderr)
        failed = {r.name for r in result.report.results if r.status == "fail"}
        if failed & {*INT8, *INT16X8} and not exporter.weights_on_int8_grid:
            # An int8-ready checkpoint is a new model: its answers differ from this one's on a few % of photos
            # (docs/results/2026-12-03-int8.md), so it is offered, not prescribed.
            print(f"hint: the weights of {args.model} are not on the int8 grid, and rounding them loses answers; "
                  "keep more of the int8 file float (--int8-float-convs), or make an int8-exact model: "
                  f"`lit-garbage int8-finetune --model {args.model} --out READY.ckpt`, then `lit-garbage export "
                  "--model READY.ckpt` (a fine-tuned model: compare both with `lit-garbage evaluate`)",
                  file=sys.stderr)
        return 1
    for r in result.report.skipped:
        print(f"warning: {r.name} was NOT verified: {r.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

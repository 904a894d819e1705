"""What an export is asked to make: `ExportConfig`, every option of `lit-garbage export` with its default, once.

    Exporter(ExportConfig(model="runs/x/model.ckpt", formats=["onnx", "int8"], int8=Int8Options(float_convs=16)))

The command line (`lit-garbage export --int8.float_convs 16`), a config file (`--config export.yaml`, the YAML
`--print_config` writes) and the code use the same names, and `metadata.json` records the int8 options under them.
Each field's docstring is its `--help` text; its bounds are a `Rule` in the table beside its class, enforced when
the class is made, and checked by the command on the parsed options before any model loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lit_garbage.checks import Rule, enforce, one_of, whole
from lit_garbage.export.references import VERIFY_IMAGES
from lit_garbage.int8.ranges import RANGE_CHOICES
from lit_garbage.runs import DataPaths


@dataclass
class Int8Options:
    """int8 (and int16x8) quantisation: calibration, activation ranges and what stays float32 (docs/int8.md)"""

    calib_images: int = 100
    """training-split images the integer files are calibrated on"""
    ranges: Literal[RANGE_CHOICES] = "minmax"
    """activation ranges: minmax (the calibrator's), mse (least squared error, every op output) or mse-signed
    (only tensors taking negative values). minmax is the portable choice: MediaPipe's LiteRT computes a
    mse-signed file differently from ai-edge-litert (docs/results/2026-12-03-int8.md)"""
    float_convs: int = 8
    """the int8 file stays float32 up to its N-th convolution (input normalisation, stem, first blocks): closer
    to float, faster on CPU; 0: int8 from the input. 8 is the measured trade-off (docs/results/2026-12-03-int8.md)"""
    float_classifier: bool = True
    """keep the int8 file's last dense layer and softmax float32 (in int8 the probabilities sit on 256 levels,
    where near ties collapse to the lower class index)"""

    def __post_init__(self) -> None:
        enforce(INT8_RULES, **asdict(self))


@dataclass
class ExportConfig:
    """what to export, where, and how it is checked"""

    model: Path
    """checkpoint of a `lit-garbage fit` run (e.g. RUN/model.ckpt)"""
    out: Path | None = None
    """output folder (default: RUN/export); replaced atomically"""
    formats: list[str] | None = None
    """formats to export and what they build on (default: all but int16x8)"""
    int8: Int8Options = field(default_factory=Int8Options)
    verify: bool = True
    """run every file against the torch model on the run's test images (false: experts only)"""
    verify_images: int = VERIFY_IMAGES
    """test-split images run through every backend (the int8 check tightens with more)"""
    data: DataPaths = field(default_factory=DataPaths)
    model_name: str | None = None
    """name written into every model file (default: lit-garbage)"""
    model_version: str | None = None
    """version written into every model file (default: the lit-garbage version)"""
    tflite_metadata: bool = True
    """write TFLite Metadata into the .tflite files (needs tflite-support; without it MediaPipe and the LiteRT
    Task Library cannot load them)"""
    verbose: bool = False
    """show the converters' own logs (and TensorFlow's)"""

    def __post_init__(self) -> None:
        enforce(EXPORT_RULES, verify_images=self.verify_images)


# Every numeric option has bounds: an absurd value is one line before any work.
INT8_RULES = (
    Rule("int8.calib_images", *whole(1, 100_000)),
    Rule("int8.ranges", one_of(*RANGE_CHOICES), f"must be one of {', '.join(RANGE_CHOICES)}"),
    Rule("int8.float_convs", *whole(0, 1000)),
)
EXPORT_RULES = (Rule("verify_images", *whole(1, 100_000)),)
ALL_RULES = INT8_RULES + EXPORT_RULES

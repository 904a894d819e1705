"""What each exported file is compared with, and how close it must be: one place, from measurements.

- float32 files (ONNX, SavedModel, TFLite float32, TFJS) against torch itself.
- TFLite float16 against *the export's ONNX file with its weights rounded to float16* (`fp16_reference`), run
  in onnxruntime: the converter reads that file and stores its weights as float16, computed in float32 on CPU,
  so the same rounding of the same float32 values reproduces the file to float32 precision, with the float32
  bound. (Rounding torch's weights instead, even with the BatchNorms folded as the converter folds them, is not
  exact: a float32 fold computed in another order rounds some weights to the neighbouring float16 value, and
  models sensitive to fp16 rounding turn those few into 1e-3 in probability: a sound fine-tuned export of a
  real model failed so.)
- TFLite int8 against torch, by top-1 agreement only: it fails when more images disagree than a file agreeing
  on `int8_agreement` of all images would show by chance on this many (`int8_allowed_disagreements`).
- TFLite int16x8 (int16 activations, int8 weights) against torch with a max-abs-diff bound like the float
  files, from its own measurement (`INT16X8_MAX_ABS_DIFF`).

Top-1, margin-aware: when every probability is within `max_abs_diff` of the reference, top-1 can only
change on an image whose reference top-1 / top-2 margin is below 2 x max_abs_diff. Such a disagreement
is a near tie (reported, not a failure); any other disagreement fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_garbage.formats import FORMATS

ONNX_FILE = FORMATS["onnx"].file  # the fp16 reference is built from it

# ---------------------------------------------------------------- thresholds and where they come from

FP32_MAX_ABS_DIFF = 1e-4
# The fp16 file against its reference is float32 computation of the same float16 weights: the float32 bound.
FP16_MAX_ABS_DIFF = FP32_MAX_ABS_DIFF
# A sound int8 file changes top-1 on 0-1.5 % of real photos (docs/results/2026-12-03-int8.md), and where it does,
# torch's margin was up to 0.66 (`MEASURED['int8_vs_torch']`): neither a probability bound nor a margin separates
# sound from broken, and a fixed fraction of a few dozen images fails sound files by chance (98 % of 64 images
# allows one disagreement: a file agreeing on 99 % of all photos then fails with probability 0.13, one at 98.5 %
# with 0.25; a real seed model's sound export failed so, 2 of 64). So int8 fails when its disagreements exceed what
# a file agreeing on INT8_AGREEMENT of all images shows except with probability INT8_FALSE_FAILURE: the binomial's
# quantile. A broken file disagrees far more (two classes exchanged: 12 of 24 images on the test suite's model).
INT8_AGREEMENT = 0.98
INT8_FALSE_FAILURE = 1e-3
# Test-split images verification runs through every file. The int8 bound tightens with them: of 64 images up to
# 6 may differ (a file agreeing on 90 % still passes with probability 0.54), of 256 up to 13 (0.003); their cost
# in export time: docs/results/2026-12-02-export-verification.md.
VERIFY_IMAGES = 256
INT16X8_MAX_ABS_DIFF = 5e-2  # 2x the largest measured, 10x the real models' (MEASURED['int16x8_vs_torch'])
# int8 has no max-abs-diff bound; a disagreement is called a near tie when torch's margin is below this.
INT8_NEAR_TIE_MARGIN = 0.1
# A failing int8 file is explained by a usual fault when that fault's outputs come this close to the file's:
# 2x the largest difference of sound int8 files from torch (`MEASURED['int8_vs_torch']`).
INT8_DIAGNOSIS_BOUND = 0.5

# What each bound was measured on, written into verify.md; the measurements, dated, with the files and photos
# they were made on: docs/results/2026-12-02-export-verification.md.
MEASURED = {
    "fp32_vs_torch": "<= 1.1e-5 on both real models (ONNX, SavedModel, TFLite fp32, TFJS)",
    "fp16_vs_reference": "9.8e-6 / 7.9e-6 / 8.0e-6 (real seed model, three fine-tunes), top-1 100 %",
    "fp16_vs_torch": "0.078 / 0.046 / 0.044 on the same files (0.027 and 0.035 on the 2026-12-01 pair)",
    "int8_vs_torch": "int8-finetune checkpoints, float prefix 8: top-1 changed on 0-1.5 % of 281 test, 281 "
                     "validation and 200 smoke photos per set (2026-12-02); margins of the changed images 0.003-0.24 "
                     "(with a float prefix of 1 up to 0.66); largest probability difference 0.22 (0.25 with a "
                     "float prefix of 3)",
    "int16x8_vs_torch": "2.8e-3 / 4.5e-3 (seed, `int8-finetune --epochs 0` / 1), 7.5e-3 / 5.4e-3 "
                        "(full_finetune.yaml), top-1 100 %; 0.024 on the test suite's tiny 64 px model trained "
                        "from scratch",
}


def judged_as(criterion: str) -> tuple[str, ...]:
    """The format keys whose rows (`lit_garbage.formats`) name `criterion`."""
    return tuple(key for key, row in FORMATS.items() if row.criterion == criterion)


FLOAT32, FLOAT16, INT8, INT16X8 = (judged_as(c) for c in ("fp32", "fp16", "int8", "int16x8"))


@dataclass(frozen=True)
class Criterion:
    """How one file is judged: against which reference, with which bounds, and why."""

    reference: str  # a REFERENCE_LABELS key
    max_abs_diff: float | None = None  # None: not bounded
    top1: str = "margin"  # "margin": every top-1 equal except near ties; "fraction": no more disagreements than
    top1_agreement: float = 1.0  # a file agreeing on top1_agreement shows by chance (`int8_allowed_disagreements`)
    near_tie_margin: float = 0.0  # reference top-1 / top-2 margin below which a disagreement is a near tie
    why: str = ""
    # How close a usual fault's outputs (class order, normalisation) must come to a failing file's to explain it;
    # None: max_abs_diff.
    diagnosis_bound: float | None = None

    @property
    def explained_within(self) -> float | None:
        return self.max_abs_diff if self.diagnosis_bound is None else self.diagnosis_bound

    def limits(self) -> dict[str, float]:
        """The bounds as numbers (verify.json `thresholds`)."""
        out: dict[str, float] = {}
        if self.max_abs_diff is not None:
            out["max_abs_diff"] = self.max_abs_diff
        if self.top1 == "fraction":
            out["top1_agreement"] = self.top1_agreement
        out["near_tie_margin"] = self.near_tie_margin
        return out

    def describe(self) -> str:
        parts = []
        if self.max_abs_diff is not None:
            parts.append(f"max abs diff <= {self.max_abs_diff:g}")
        if self.top1 == "margin":
            parts.append(f"every top-1 equal (near ties: margin < {self.near_tie_margin:g})")
        else:
            parts.append(f"top-1 agreement consistent with {100 * self.top1_agreement:g} % (binomial: fails when "
                         f"more images differ than such a file shows with probability {INT8_FALSE_FAILURE:g})")
        return ", ".join(parts)


REFERENCE_LABELS = {"torch": "torch", "onnx_fp16": "model.onnx, weights rounded to fp16"}


def criteria(int8_agreement: float = INT8_AGREEMENT) -> dict[str, Criterion]:
    """The criterion of every exported format, by the name its row gives."""
    fp32 = Criterion("torch", FP32_MAX_ABS_DIFF, near_tie_margin=2 * FP32_MAX_ABS_DIFF,
                     why=f"Float32 computation in another runtime: measured {MEASURED['fp32_vs_torch']}")
    fp16 = Criterion("onnx_fp16", FP16_MAX_ABS_DIFF, near_tie_margin=2 * FP16_MAX_ABS_DIFF,
                     why="The converter's own input with the converter's float16 rounding, computed in float32 like "
                         f"the file: measured {MEASURED['fp16_vs_reference']} (against plain torch "
                         f"{MEASURED['fp16_vs_torch']}); the float32 bound")
    int8 = Criterion("torch", None, top1="fraction", top1_agreement=float(int8_agreement),
                     near_tie_margin=INT8_NEAR_TIE_MARGIN, diagnosis_bound=INT8_DIAGNOSIS_BOUND,
                     why="Int8 changes probabilities too much for a max-abs-diff bound, and top-1 on some "
                         f"images: measured {MEASURED['int8_vs_torch']}. It fails when more images differ than "
                         f"chance gives a file agreeing on {100 * float(int8_agreement):g} % of all images "
                         "(the threshold set by the exporter)")
    int16x8 = Criterion("torch", INT16X8_MAX_ABS_DIFF, near_tie_margin=2 * INT16X8_MAX_ABS_DIFF,
                        why=f"int16 activations keep float's answers: measured {MEASURED['int16x8_vs_torch']}")
    by_name = {"fp32": fp32, "fp16": fp16, "int8": int8, "int16x8": int16x8}
    return {key: by_name[row.criterion] for key, row in FORMATS.items() if row.criterion}


def int8_allowed_disagreements(images: int, agreement: float) -> int:
    """The most top-1 disagreements among `images` that a file agreeing on `agreement` of all images shows
    except with probability `INT8_FALSE_FAILURE` (the binomial's upper quantile)."""
    from scipy.stats import binom

    return int(binom.ppf(1.0 - INT8_FALSE_FAILURE, images, 1.0 - agreement))


# ---------------------------------------------------------------- top-1 with margins


@dataclass
class Top1:
    agreement: float
    disagreements: int
    near_ties: int  # disagreements where the reference margin < near_tie_margin

    @property
    def hard(self) -> int:
        return self.disagreements - self.near_ties


def margins(probs: np.ndarray) -> np.ndarray:
    """Per image: top-1 minus top-2 probability."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def top1(reference: np.ndarray, probs: np.ndarray, near_tie_margin: float) -> Top1:
    differ = probs.argmax(1) != reference.argmax(1)
    near = differ & (margins(reference) < near_tie_margin)
    return Top1(float(1 - differ.mean()), int(differ.sum()), int(near.sum()))


# ---------------------------------------------------------------- the fp16 reference: the converter's input, rounded


@dataclass
class Fp16Reference:
    """The export's ONNX file with its float32 weights rounded to float16, run in onnxruntime; or why there is none.

    The TFLite converter reads that very file (through onnx2tf, with its BatchNorms already folded by the ONNX
    exporter) and stores its weights as float16, computed in float32 on CPU: rounding the same float32 values
    reproduces the file's arithmetic to float32 precision. The ONNX file is itself checked against torch first
    (`onnx_vs_torch`), so the chain torch -> ONNX -> fp16 rounding holds end to end."""

    run: Callable[[np.ndarray], np.ndarray] | None  # [0, 1] NCHW images -> probabilities; None when absent
    rounded: int = 0  # float32 initializers rounded to float16
    onnx_vs_torch: float | None = None  # max abs diff, the unrounded ONNX file against torch
    reason: str = ""  # why there is no reference

    def describe(self) -> str:
        if self.run is None:
            return f"no fp16 reference: {self.reason}"
        return (f"fp16 reference: `{ONNX_FILE}` (= torch within {self.onnx_vs_torch:.1e}, <= {FP32_MAX_ABS_DIFF:g}) "
                f"with its {self.rounded} float32 weight tensors rounded to float16 (divisions by a constant as "
                "multiplications by its reciprocal), computed in float32 (onnxruntime): what the converter reads, "
                "rounded as it rounds")


def rounded_to_fp16(model):
    """A copy of the ONNX `model` with every float32 initializer rounded to float16 (kept float32), and how many.

    A division by a constant becomes a multiplication by its reciprocal first, as the converter stores it (the
    input normalisation's `/ std`): rounding the reciprocal, not the divisor, is what the file holds (measured on
    the tests' model with ImageNet's std: 1.2e-4 from the file otherwise, 4.5e-7 so)."""
    import onnx
    from onnx import numpy_helper

    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    graph = rounded.graph
    constants = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in graph.node:
        if node.op_type == "Div" and len(node.input) == 2 and node.input[1] in constants:
            divisor = numpy_helper.to_array(constants[node.input[1]])
            name = f"{node.input[1]}_reciprocal"
            if name not in constants:
                constants[name] = numpy_helper.from_array((np.float32(1.0) / divisor).astype(np.float32), name)
                graph.initializer.append(constants[name])
            node.op_type, node.input[1] = "Mul", name
    n = 0
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float16).astype(np.float32), init.name))
            n += 1
    return rounded, n


def onnx_runner(model, batch: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """NCHW float32 [0, 1] images -> probabilities of an in-memory ONNX model: one onnxruntime CPU session,
    reused by every call (verification and the diagnosis of a failing file run it several times)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {name: np.ascontiguousarray(images[i:i + batch], dtype=np.float32)})[0]
                               for i in range(0, len(images), batch)])

    return run


def fp16_reference(export_dir: str | Path, images: np.ndarray, reference_probs: np.ndarray) -> Fp16Reference:
    """The fp16 reference from `export_dir`'s ONNX file, checked against torch's `reference_probs` on `images`."""
    import onnx

    path = Path(export_dir) / ONNX_FILE
    if not path.is_file():
        return Fp16Reference(None, reason=f"no {ONNX_FILE} in {Path(export_dir).name} to build it from (the TFLite "
                                          "files are converted from it)")
    model = onnx.load(str(path))
    check = float(np.abs(onnx_runner(model)(images).astype(np.float64) - reference_probs).max())
    if not check <= FP32_MAX_ABS_DIFF:
        return Fp16Reference(None, onnx_vs_torch=check,
                             reason=f"{ONNX_FILE} differs from torch by {check:.2e} (> {FP32_MAX_ABS_DIFF:g})")
    rounded, n = rounded_to_fp16(model)
    return Fp16Reference(onnx_runner(rounded), n, check)


def predict(graph, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities of a torch graph for NCHW float32 images, in batches."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(graph(torch.from_numpy(np.ascontiguousarray(images[i:i + batch], dtype=np.float32))).numpy())
    return np.concatenate(out)

"""Verification: the same images through torch and every exported file, compared to torch.

Per backend: max absolute difference of the probabilities against torch, top-1 agreement and latency
per image (batch 1, after one warm-up run). Thresholds (issue #3):

- float32 formats (ONNX, SavedModel, TFLite float32, TFJS): max abs diff <= 1e-4 and 100 % top-1 agreement;
- TFLite float16: max abs diff <= 1e-2;
- TFLite int8: top-1 agreement >= 98 % (only meaningful for a trained model, on real images).

A backend whose runtime is missing (no `node` for TFJS) is reported as SKIPPED with the reason, never
as passed. `verify.json` (machine-readable) and `verify.md` (a table) are written into the export folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lit_garbage.artifacts import FORMATS, read_facts
from lit_garbage.inference.backends import (
    Backend,
    BackendUnavailableError,
    ModelFileError,
    load_backend,
)

VERIFY_JSON = "verify.json"
VERIFY_MD = "verify.md"

FP32 = {"max_abs_diff": 1e-4, "top1_agreement": 1.0}
THRESHOLDS: dict[str, dict[str, float]] = {
    "onnx": FP32,
    "saved_model": FP32,
    "tflite_float32": FP32,
    "tflite_float16": {"max_abs_diff": 1e-2},
    "tflite_int8": {"top1_agreement": 0.98},
    "tfjs": FP32,
}
LABELS = {"torch": "torch (reference)", "onnx": "ONNX (onnxruntime)", "saved_model": "SavedModel (TensorFlow)",
          "tflite_float32": "TFLite float32 (LiteRT)", "tflite_float16": "TFLite float16 (LiteRT)",
          "tflite_int8": "TFLite int8 (LiteRT)", "tfjs": "TFJS (Node, wasm)"}


@dataclass
class BackendResult:
    name: str
    path: str
    status: str  # "pass", "fail", "skipped", "error"
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    latency_ms: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class VerifyReport:
    images: int
    image_source: str
    results: list[BackendResult]
    notes: list[str] = field(default_factory=list)  # what the verified files carry (their metadata)

    @property
    def failures(self) -> list[BackendResult]:
        return [r for r in self.results if r.status in ("fail", "error")]

    @property
    def skipped(self) -> list[BackendResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def verdict(self) -> str:
        if self.failures:
            return "FAIL: " + "; ".join(f"{r.name}: {r.message}" for r in self.failures)
        skipped = f" ({len(self.skipped)} skipped: {', '.join(r.name for r in self.skipped)})" if self.skipped else ""
        return f"PASS{skipped}"

    def to_json(self) -> dict:
        return {"passed": self.passed, "verdict": self.verdict(), "images": self.images,
                "image_source": self.image_source, "thresholds": THRESHOLDS,
                "backends": [asdict(r) for r in self.results], "model_files": list(self.notes)}

    def to_markdown(self) -> str:
        def fmt(v, spec):
            return "-" if v is None else format(v, spec)
        lines = [
            "# Export verification",
            "",
            f"{self.images} images ({self.image_source}), probabilities compared with the torch checkpoint.",
            "",
            "| backend | status | max abs diff | top-1 agreement | latency (ms/image) | threshold |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            limits = ", ".join(f"max abs diff <= {v:g}" if k == "max_abs_diff" else f"top-1 >= {100 * v:g} %"
                               for k, v in r.thresholds.items()) or "reference"
            agree = None if r.top1_agreement is None else 100 * r.top1_agreement
            lines.append(f"| {LABELS.get(r.name, r.name)} | {r.status.upper()} | {fmt(r.max_abs_diff, '.2e')} | "
                         f"{fmt(agree, '.1f')}{'' if agree is None else ' %'} | {fmt(r.latency_ms, '.2f')} | {limits} |")
        notes = [f"- **{r.name}** {r.status}: {r.message}" for r in self.results if r.message]
        lines += ["", f"**{self.verdict()}**", ""] + (notes + [""] if notes else [])
        if self.notes:
            lines += ["## Model files (as verified above, metadata included)", ""]
            lines += [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        (folder / VERIFY_JSON).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        (folder / VERIFY_MD).write_text(self.to_markdown())


def compare(name: str, reference: np.ndarray, probs: np.ndarray) -> tuple[float, float, list[str]]:
    """(max abs diff, top-1 agreement, threshold violations naming the figure)."""
    if probs.shape != reference.shape:
        return float("nan"), 0.0, [f"output shape {probs.shape} != torch {reference.shape}"]
    diff = float(np.abs(probs.astype(np.float64) - reference).max())
    agree = float((probs.argmax(1) == reference.argmax(1)).mean())
    broken = []
    limits = THRESHOLDS.get(name, {})
    if "max_abs_diff" in limits and not diff <= limits["max_abs_diff"]:
        broken.append(f"max abs diff {diff:.3g} > {limits['max_abs_diff']:g}")
    if "top1_agreement" in limits and agree < limits["top1_agreement"]:
        broken.append(f"top-1 agreement {100 * agree:.1f} % < {100 * limits['top1_agreement']:g} %")
    return diff, agree, broken


def verify_export(export_dir: str | Path, reference: Backend, images: np.ndarray, formats: Sequence[str],
                  image_source: str, log: Callable[[str], None] = print,
                  notes: Sequence[str] = ()) -> VerifyReport:
    """Run `images` (NCHW float32 [0, 1]) through `reference` (torch) and each format's file in `export_dir`;
    `notes`: lines on what the files carry, for the report."""
    export_dir = Path(export_dir)
    ref_probs, ref_ms = reference.timed_predict(images)
    results = [BackendResult("torch", str(reference.path), "pass", 0.0, 1.0, ref_ms)]
    for name in formats:
        rel = FORMATS[name]["file"]
        result = BackendResult(name, rel, "error", thresholds=THRESHOLDS.get(name, {}))
        try:
            backend = load_backend(export_dir / rel, threads=None)
            if backend.class_names != reference.class_names:
                raise ModelFileError(f"class names {backend.class_names} != checkpoint {reference.class_names}")
            own = read_facts(export_dir / rel)  # what the file says about itself, copied alone
            if own is not None and own.get("class_names") != reference.class_names:
                raise ModelFileError(f"the file's own metadata names {own.get('class_names')}, "
                                     f"the checkpoint {reference.class_names}")
            probs, result.latency_ms = backend.timed_predict(images)
            result.max_abs_diff, result.top1_agreement, broken = compare(name, ref_probs, probs)
            result.status = "fail" if broken else "pass"
            result.message = "; ".join(broken)
        except BackendUnavailableError as err:
            result.status, result.message = "skipped", f"NOT VERIFIED: {err}"
        except Exception as err:  # a backend that cannot load or run its own file is a failure
            result.status, result.message = "error", f"{type(err).__name__}: {err}"
        results.append(result)
        log(f"  verify {name:<15} {result.status.upper():<8}"
            + (f" max|diff| {result.max_abs_diff:.2e}  top-1 {100 * result.top1_agreement:5.1f} %  "
               f"{result.latency_ms:7.2f} ms/image" if result.latency_ms is not None else "")
            + (f"  {result.message}" if result.message else ""))
    return VerifyReport(len(images), image_source, results, list(notes))

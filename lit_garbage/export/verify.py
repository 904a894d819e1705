"""Verification: the same images through torch and every exported file, each compared with its reference.

Per backend: max absolute difference of the probabilities against its reference, top-1 agreement
(margin-aware), latency per image (batch 1, after one warm-up run). What each file is compared with and
how close it must be, with the measurements behind the bounds: `lit_garbage.export.references`.
A file that fails is diagnosed against the usual faults: a file whose input size is not the checkpoint's,
outputs in another class order, another input normalisation or channel order; anything else is reported as
a different function (weights or operations differ).

A backend whose runtime is missing (no `node` for TFJS) is reported as SKIPPED with the reason, never
as passed. `verify.json` (machine-readable) and `verify.md` (a table) are written into the export folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lit_garbage.artifacts import read_facts, without_local_paths
from lit_garbage.export import references
from lit_garbage.export.references import INT8_AGREEMENT, REFERENCE_LABELS, Criterion
from lit_garbage.formats import FORMATS
from lit_garbage.inference.backends import (
    Backend,
    BackendUnavailableError,
    ModelFileError,
    load_backend,
)

VERIFY_JSON = "verify.json"
VERIFY_MD = "verify.md"


def label(name: str) -> str:
    """A format's name in verify.md (its row's label)."""
    return FORMATS[name].label if name in FORMATS else name


@dataclass
class BackendResult:
    name: str
    path: str
    status: str  # "pass", "fail", "skipped", "error"
    max_abs_diff: float | None = None  # against `reference`
    top1_agreement: float | None = None  # against `reference`
    latency_ms: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    reference: str = "torch"  # a references.REFERENCE_LABELS key
    near_ties: int = 0  # top-1 disagreements on images whose reference margin is below near_tie_margin
    vs_torch: float | None = None  # max abs diff against plain torch, when the reference is another


@dataclass
class VerifyReport:
    images: int
    image_source: str
    results: list[BackendResult]
    notes: list[str] = field(default_factory=list)  # what the verified files carry (their metadata)
    criteria: dict[str, Criterion] = field(default_factory=references.criteria)
    reference_notes: list[str] = field(default_factory=list)  # how the references were made

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

    def _verified(self) -> list[str]:
        return [r.name for r in self.results if r.name in self.criteria]

    def to_json(self) -> dict:
        names = self._verified()
        return {"passed": self.passed, "verdict": self.verdict(), "images": self.images,
                "image_source": self.image_source,
                "thresholds": {n: self.criteria[n].limits() for n in names},
                "criteria": {n: {"reference": self.criteria[n].reference, "rule": self.criteria[n].describe(),
                                 "why": self.criteria[n].why} for n in names},
                "reference_notes": list(self.reference_notes),
                "backends": [asdict(r) for r in self.results], "model_files": list(self.notes)}

    def to_markdown(self) -> str:
        def fmt(v, spec):
            return "-" if v is None else format(v, spec)
        lines = [
            "# Export verification",
            "",
            (f"{self.images} images ({self.image_source}); each file's probabilities compared with its reference "
             "(below)."),
            "",
            ("| backend | status | reference | max abs diff | top-1 agreement | near ties | max abs diff vs torch "
             "| latency (ms/image) | criterion |"),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            crit = self.criteria.get(r.name)
            agree = None if r.top1_agreement is None else 100 * r.top1_agreement
            lines.append(f"| {label(r.name)} | {r.status.upper()} | "
                         f"{REFERENCE_LABELS.get(r.reference, r.reference) if crit else '-'} | "
                         f"{fmt(r.max_abs_diff, '.2e')} | {fmt(agree, '.1f')}{'' if agree is None else ' %'} | "
                         f"{r.near_ties if crit and r.top1_agreement is not None else '-'} | "
                         f"{fmt(r.vs_torch, '.2e')} | {fmt(r.latency_ms, '.2f')} | "
                         f"{crit.describe() if crit else 'reference'} |")
        notes = [f"- **{r.name}** {r.status}: {r.message}" for r in self.results if r.message]
        lines += ["", f"**{self.verdict()}**", ""] + (notes + [""] if notes else [])
        lines += ["## What each file is compared with, and why", ""]
        groups: dict[Criterion, list[str]] = {}
        for n in self._verified():
            groups.setdefault(self.criteria[n], []).append(label(n))
        for crit, names in groups.items():
            lines.append(f"- {', '.join(names)}: against {REFERENCE_LABELS[crit.reference]}; {crit.describe()}. "
                         f"{crit.why}.")
        lines += [f"- {n}" for n in self.reference_notes]
        lines += [("- Top-1, margin-aware: within a max abs diff d of the reference, top-1 can only change where the "
                   "reference's top-1 / top-2 margin is below 2d; such a disagreement is a near tie (counted, "
                   "not a failure), any other fails."), ""]
        if self.notes:
            lines += ["## Model files (as verified above, metadata included)", ""]
            lines += [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        # Shipped with the export: messages naming this machine's folders (an install hint) lose them.
        (folder / VERIFY_JSON).write_text(without_local_paths(json.dumps(self.to_json(), indent=2) + "\n"))
        (folder / VERIFY_MD).write_text(without_local_paths(self.to_markdown()))


def compare(criterion: Criterion, reference: np.ndarray, probs: np.ndarray) -> tuple[float, references.Top1, list[str]]:
    """(max abs diff, top-1 against the reference, the criterion's violations naming the figure)."""
    if probs.shape != reference.shape:
        return float("nan"), references.Top1(0.0, len(reference), 0), \
            [f"output shape {probs.shape} != the reference's {reference.shape}"]
    diff = float(np.abs(probs.astype(np.float64) - reference).max())
    top = references.top1(reference, probs, criterion.near_tie_margin)
    broken = []
    if criterion.max_abs_diff is not None and not diff <= criterion.max_abs_diff:
        broken.append(f"max abs diff {diff:.3g} > {criterion.max_abs_diff:g}")
    if criterion.top1 == "margin" and top.hard:
        broken.append(f"top-1 differs on {top.hard} of {len(reference)} images where the reference's margin is "
                      f">= {criterion.near_tie_margin:g} (not near ties)")
    if criterion.top1 == "fraction":
        allowed = references.int8_allowed_disagreements(len(reference), criterion.top1_agreement)
        if top.disagreements > allowed:
            broken.append(f"top-1 agreement {100 * top.agreement:.1f} %: {top.disagreements} of {len(reference)} "
                          f"images differ, a file agreeing on {100 * criterion.top1_agreement:g} % differs on at "
                          f"most {allowed} (binomial, p < {references.INT8_FALSE_FAILURE:g}); {top.near_ties} of "
                          f"the {top.disagreements} near ties, margin < {criterion.near_tie_margin:g}")
    return diff, top, broken


# ---------------------------------------------------------------- what a failing file got wrong


def _class_order(reference: np.ndarray, probs: np.ndarray, class_names: Sequence[str], bound: float) -> str | None:
    """The file's outputs are the reference's in another order (within `bound`): which output is which class."""
    n = reference.shape[1]
    cost = np.abs(probs[:, :, None].astype(np.float64) - reference[:, None, :]).max(axis=0)  # file j vs ref i
    match = cost.argmin(axis=1)
    if sorted(match) != list(range(n)) or (match == np.arange(n)).all() or cost[np.arange(n), match].max() > bound:
        return None
    moved = [f"output {j} ('{class_names[j]}') is '{class_names[i]}'" for j, i in enumerate(match) if i != j]
    return "outputs in another class order than the checkpoint's: " + ", ".join(moved)


def _input_candidates(net) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """(what the file would do, images -> the images the reference must see to match it) for the usual input
    faults; `net` holds the checkpoint's normalisation (`mean`, `std`)."""
    mean = np.asarray(net.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(net.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def normalised_as(m, s):
        m, s = np.float32(m).reshape(1, 3, 1, 1), np.float32(s).reshape(1, 3, 1, 1)
        return lambda x: (x - m) / s * std + mean  # the reference normalises this to (x - m) / s

    def fmt(t):
        return "(" + ", ".join(f"{v:.3g}" for v in np.asarray(t).ravel()) + ")"

    own = f"the checkpoint's mean {fmt(mean)}, std {fmt(std)}"
    out = [("does not normalise its input (no mean / std)", normalised_as((0.0,) * 3, (1.0,) * 3)),
           ("normalises its input twice", lambda x: (x - mean) / std),
           ("reads its input as BGR (channel order reversed)", lambda x: x[:, ::-1]),
           ("divides its [0, 1] input by 255 again", lambda x: x / np.float32(255.0))]
    for name, m, s in (("ImageNet's", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                       ("the [-1, 1] scaling's", (0.5,) * 3, (0.5,) * 3)):
        if not np.allclose(mean.ravel(), m, atol=1e-4) or not np.allclose(std.ravel(), s, atol=1e-4):
            out.append((f"normalises with {name} mean {fmt(m)}, std {fmt(s)}", normalised_as(m, s)))
    return [(f"the file {what}, not with {own}", fn) for what, fn in out]


def diagnose(run: Callable[[np.ndarray], np.ndarray], net, images: np.ndarray, reference: np.ndarray,
             probs: np.ndarray, class_names: Sequence[str], bound: float) -> str:
    """What the usual faults explain `probs` (a failing file's probabilities) within `bound`; `run` computes the
    reference (`reference` = run(images)), `net` holds the checkpoint's normalisation (None: not checked). Else:
    the file computes a different function."""
    if probs.shape != reference.shape:
        return f"the file has {probs.shape[-1]} outputs, the checkpoint {reference.shape[-1]} classes"
    order = _class_order(reference, probs, class_names, bound)
    if order:
        return order
    if net is not None and hasattr(net, "mean") and hasattr(net, "std"):
        x = np.ascontiguousarray(images, dtype=np.float32)
        for what, fn in _input_candidates(net):
            seen = run(np.ascontiguousarray(fn(x), dtype=np.float32))
            if np.abs(seen.astype(np.float64) - probs).max() <= bound:
                return f"wrong input normalisation: {what}"
    return ("not explained by class order, input normalisation or channel order: the file computes a different "
            "function than the checkpoint (a weight tensor or an operation differs)")


# ---------------------------------------------------------------- the verification


def verify_export(export_dir: str | Path, reference: Backend, images: np.ndarray, formats: Sequence[str],
                  image_source: str, log: Callable[[str], None] = print, notes: Sequence[str] = (),
                  int8_agreement: float = INT8_AGREEMENT) -> VerifyReport:
    """Run `images` (NCHW float32 [0, 1]) through `reference` (torch) and each format's file in `export_dir`,
    each compared with its criterion (`references.criteria`); `notes`: lines on what the files carry."""
    export_dir = Path(export_dir)
    ref_probs, ref_ms = reference.timed_predict(images)
    runs = {"torch": lambda x: references.predict(reference.graph, x)}
    against = {"torch": ref_probs}
    reference_notes = []
    missing: dict[str, str] = {}  # reference -> why there is none
    if set(formats) & set(references.FLOAT16):
        fp16 = references.fp16_reference(export_dir, images, ref_probs)
        reference_notes.append(fp16.describe())
        if fp16.run is None:
            missing["onnx_fp16"] = fp16.describe()
        else:
            runs["onnx_fp16"] = fp16.run
            against["onnx_fp16"] = fp16.run(images)
    criteria = references.criteria(int8_agreement)
    results = [BackendResult("torch", str(reference.path), "pass", 0.0, 1.0, ref_ms)]
    for name in formats:
        rel = FORMATS[name].file
        crit = criteria[name]
        result = BackendResult(name, rel, "error", thresholds=crit.limits(), reference=crit.reference)
        try:
            backend = load_backend(export_dir / rel, threads=None)
            if backend.image_size != reference.image_size:
                raise ModelFileError(f"wrong image size: the file takes {backend.image_size} x {backend.image_size} "
                                     f"px images, the checkpoint {reference.image_size} x {reference.image_size}")
            if backend.class_names != reference.class_names:
                raise ModelFileError(f"class names {backend.class_names} != checkpoint {reference.class_names}")
            own = read_facts(export_dir / rel)  # what the file says about itself, copied alone
            if own is not None and own.get("class_names") != reference.class_names:
                raise ModelFileError(f"the file's own metadata names {own.get('class_names')}, "
                                     f"the checkpoint {reference.class_names}")
            if crit.reference in missing:
                raise ModelFileError(f"not verified: {missing[crit.reference]}")
            probs, result.latency_ms = backend.timed_predict(images)
            target = against[crit.reference]
            result.max_abs_diff, top, broken = compare(crit, target, probs)
            result.top1_agreement, result.near_ties = top.agreement, top.near_ties
            if crit.reference != "torch" and probs.shape == ref_probs.shape:
                result.vs_torch = float(np.abs(probs.astype(np.float64) - ref_probs).max())
            if broken and crit.explained_within is not None:
                broken.append(diagnose(runs[crit.reference], getattr(reference.graph, "net", None), images, target,
                                       probs, reference.class_names, crit.explained_within))
            result.status = "fail" if broken else "pass"
            notes_ = [] if broken or not top.near_ties else \
                [f"{top.near_ties} near tie(s): top-1 differs where the reference's margin < {crit.near_tie_margin:g}"]
            result.message = "; ".join(broken or notes_)
        except BackendUnavailableError as err:
            result.status, result.message = "skipped", f"NOT VERIFIED: {err}"
        except Exception as err:  # a backend that cannot load or run its own file is a failure
            result.status, result.message = "error", f"{type(err).__name__}: {err}"
        results.append(result)
        log(f"  verify {name:<15} {result.status.upper():<8}"
            + (f" max|diff| {result.max_abs_diff:.2e} (vs {crit.reference})  top-1 {100 * result.top1_agreement:5.1f} %"
               f"  {result.latency_ms:7.2f} ms/image" if result.latency_ms is not None else "")
            + (f"  vs torch {result.vs_torch:.2e}" if result.vs_torch is not None else "")
            + (f"  {result.message}" if result.message else ""))
    return VerifyReport(len(images), image_source, results, list(notes), criteria, reference_notes)

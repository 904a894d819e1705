"""`run_audit`: scan, embed once, rank label issues and outliers, look for twins in another folder, write it all.

Nothing under the audited folders is written, moved or deleted: every output goes to `out`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lit_garbage.audit import report, scan
from lit_garbage.audit.embeddings import BORDER_MIN, choose_extractor, embed
from lit_garbage.audit.label_issues import (
    FOLDS,
    AuditError,
    find_label_issues,
    find_outliers,
    per_class,
)
from lit_garbage.audit.sheets import contact_sheets
from lit_garbage.safe_loading import inside

SHEET = 50  # suspects drawn on the contact sheets
OUTLIER_SHEET = 25


@dataclass
class Audit:
    out: Path
    result: dict  # what audit.json holds
    files: list[Path] = field(default_factory=list)


def run_audit(data: str | Path, out: str | Path, model: str | Path | None = None, against: str | Path | None = None,
              weights: Path | None = None, folds: int = FOLDS, sheet: int = SHEET,
              near_distance: int | None = scan.NEAR_DISTANCE, batch_size: int = 64, image_size: int | None = None,
              say: Callable[[str], None] = lambda _: None) -> Audit:
    data, out = Path(data), Path(out)
    for folder in filter(None, (data, against)):
        if inside(out, folder):
            raise AuditError(f"the output folder {out} is inside {folder}: the audit never writes into a dataset "
                             "(its files would be scanned as photos next time); choose --out elsewhere")
    started = time.monotonic()
    say(f"scanning {data} (decode, sha256, perceptual hash of every file)")
    s = scan.scan(data)
    if not s.paths:
        raise AuditError(f"no readable photo under {data}")
    groups = scan.duplicates(s, near_distance)
    extractor = choose_extractor(model, weights, image_size)
    say(f"features: {extractor.source}")
    out.mkdir(parents=True, exist_ok=True)
    emb = embed(data, s.paths, extractor, cache_dir=out, batch_size=batch_size,
                progress=lambda done, total: say(f"embedded {done}/{total}") if done % (batch_size * 20) == 0
                or done == total else None)
    if emb.cached:
        say(f"features read from {out / 'embeddings.npz'} (same files, same feature source)")
    say(f"out-of-fold probabilities ({folds}-fold logistic regression) and cleanlab")
    issues = find_label_issues(emb.features, s.labels, scan.group_ids(s, groups), folds)
    outliers, outlier_scores = find_outliers(emb.features)
    pairs, other = None, None
    if against is not None:
        say(f"scanning {against} for twins of the audited photos")
        other = scan.scan(against)
        pairs = scan.twins_between(s, other, near_distance)

    result = report.result(s, groups, emb, issues, outliers, outlier_scores, pairs, other, BORDER_MIN,
                           near_distance, time.monotonic() - started)
    files = report.write_tables(out, s, issues, outliers, outlier_scores, groups, pairs)
    cls = s.class_names
    top = issues.ranked[:sheet]
    files += contact_sheets(out, "label_issues", "label issues: given -> suggested", [
        (data / s.paths[i], [f"#{r} given: {cls[s.labels[i]]}",
                             f"suggested: {cls[issues.suggested[i]]} {issues.probabilities[i, issues.suggested[i]]:.2f}",
                             s.paths[i]])
        for r, i in enumerate(top, start=1)])
    files += contact_sheets(out, "outliers", "outliers: farthest from every other photo", [
        (data / s.paths[i], [f"#{r} {cls[s.labels[i]]}", f"score {outlier_scores[i]:.3f}", s.paths[i]])
        for r, i in enumerate(outliers[:OUTLIER_SHEET], start=1)])
    if pairs:
        files += contact_sheets(out, "leakage", f"twins: {against} | {data}", [
            item for p in pairs[:20] for item in (
                (Path(against) / p["other"], [f"{p['other_label']} ({p['kind']})", p["other"]]),
                (data / p["data"], [f"twin: {p['data_label']}", p["data"]]))], columns=4)
    result["sheets"] = [f.name for f in files if f.suffix == ".png"]
    result["label_issues"]["per_class"] = per_class(issues.ranked, s.labels, issues.suggested, cls)
    files += report.write_report(out, data, result)
    return Audit(out, result, files)

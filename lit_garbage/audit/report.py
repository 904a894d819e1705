"""The audit's outputs: audit.json (everything), the CSV lists, and audit.md (what a person reads first)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lit_garbage.audit import scan
from lit_garbage.audit.embeddings import Embedded
from lit_garbage.audit.label_issues import LabelIssues
from lit_garbage.data.images import shown

LISTED = 50  # rows of each list in audit.md (the CSV files hold them all)
ISSUE_FIELDS = ("rank", "path", "given_label", "suggested_label", "label_quality", "p_given", "p_suggested")


def result(s: scan.Scanned, groups: list[dict], emb: Embedded, issues: LabelIssues, outliers: np.ndarray,
           outlier_scores: np.ndarray, pairs: list[dict] | None, other: scan.Scanned | None, border_min: float,
           near_distance: int | None, seconds: float) -> dict:
    cls = s.class_names
    n = len(s.paths)
    out = {
        "data": shown(s.root),
        "photos": n,
        "classes": cls,
        "features": emb.source,
        "method": (f"out-of-fold predicted probabilities: {issues.folds}-fold logistic regression on the features "
                   "(duplicate groups kept in one fold), ranked by cleanlab (find_label_issues, "
                   "prune_by_noise_rate; label quality = self-confidence); no network was trained on these photos"),
        "out_of_fold_accuracy": round(issues.accuracy, 4),
        "scan": {
            "unreadable": [{"path": shown(k.path), "reason": k.reason} for k in s.skipped],
            "class_balance": scan.class_balance(s),
            "duplicates": {
                "near_distance": near_distance,
                "exact_groups": sum(g["kind"] == "exact" for g in groups),
                "near_groups": sum(g["kind"] == "near" for g in groups),
                "photos_in_groups": sum(len(g["paths"]) for g in groups),
                "across_classes": sum(g["across_classes"] for g in groups),
                "groups": groups,
            },
            "sizes": scan.size_facts(emb.sizes),
            "borders": {"at_least": border_min, **scan.border_facts(s.paths, emb.borders, border_min)},
        },
        "label_issues": {
            "count": len(issues.ranked),
            "share": round(len(issues.ranked) / n, 4),
            "items": [_issue(s, issues, r, i) for r, i in enumerate(issues.ranked, start=1)],
        },
        "outliers": {
            "count": len(outliers),
            "items": [{"rank": r, "path": s.paths[i], "label": cls[s.labels[i]], "score": round(float(outlier_scores[i]), 4),
                       "likeliest_label": cls[int(issues.probabilities[i].argmax())]}
                      for r, i in enumerate(outliers, start=1)],
        },
        "seconds": round(seconds, 1),
    }
    if pairs is not None and other is not None:
        with_twin = sorted({p["other"] for p in pairs})
        out["leakage"] = {
            "against": shown(other.root),
            "photos": len(other.paths),
            "with_twin": len(with_twin),
            "share": round(len(with_twin) / max(1, len(other.paths)), 4),
            "exact": len({p["other"] for p in pairs if p["kind"] == "exact"}),
            "label_differs": len({p["other"] for p in pairs if p["other_label"] != p["data_label"]}),
            "pairs": pairs,
        }
    return out


def _issue(s: scan.Scanned, issues: LabelIssues, rank: int, i: int) -> dict:
    given, sug = int(s.labels[i]), int(issues.suggested[i])
    p = issues.probabilities[i]
    return {"rank": rank, "path": s.paths[i], "given_label": s.class_names[given],
            "suggested_label": s.class_names[sug], "label_quality": round(float(issues.quality[i]), 4),
            "p_given": round(float(p[given]), 4), "p_suggested": round(float(p[sug]), 4)}


def _csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_tables(out: Path, s: scan.Scanned, issues: LabelIssues, outliers: np.ndarray, outlier_scores: np.ndarray,
                 groups: list[dict], pairs: list[dict] | None) -> list[Path]:
    cls = s.class_names
    files = [
        # label_issues.csv doubles as a `fit --data.exclude` list: its `path` column is relative to the data root.
        _csv(out / "label_issues.csv", ISSUE_FIELDS,
             [[d[k] for k in ISSUE_FIELDS] for d in (_issue(s, issues, r, i) for r, i in enumerate(issues.ranked, 1))]),
        _csv(out / "outliers.csv", ("rank", "path", "label", "outlier_score", "likeliest_label"),
             [[r, s.paths[i], cls[s.labels[i]], round(float(outlier_scores[i]), 4),
               cls[int(issues.probabilities[i].argmax())]] for r, i in enumerate(outliers, 1)]),
        _csv(out / "duplicates.csv", ("group", "kind", "path", "label", "across_classes"),
             [[g["group"], g["kind"], p, label, g["across_classes"]] for g in groups
              for p, label in zip(g["paths"], g["labels"])]),
    ]
    if pairs is not None:
        keys = ("other", "other_label", "data", "data_label", "kind", "distance")
        files.append(_csv(out / "leakage.csv", keys, [[p[k] for k in keys] for p in pairs]))
    return files


def write_report(out: Path, data: Path, r: dict) -> list[Path]:
    (out / "audit.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n", encoding="utf-8",
                                    errors="surrogateescape")
    md = out / "audit.md"
    md.write_text(markdown(r), encoding="utf-8", errors="surrogateescape")
    return [out / "audit.json", md]


def _pct(k: int, n: int) -> str:
    return f"{k} ({100 * k / max(1, n):.1f} %)"


def markdown(r: dict) -> str:
    n, sc, li, ol = r["photos"], r["scan"], r["label_issues"], r["outliers"]
    dup, bal, bor = sc["duplicates"], sc["class_balance"], sc["borders"]
    lines = [
        f"# Audit of {r['data']}",
        "",
        f"{n} readable photos in {len(r['classes'])} classes; {len(sc['unreadable'])} files could not be read.",
        "",
        f"- **Features**: {r['features']}.",
        f"- **Method**: {r['method']}. Out-of-fold accuracy of the given labels: {100 * r['out_of_fold_accuracy']:.1f} %.",
        "",
        "| finding | photos |",
        "| --- | --- |",
        f"| label issues (suspected wrong labels) | {_pct(li['count'], n)} |",
        f"| outliers listed (most isolated photos) | {ol['count']} |",
        (f"| exact duplicate groups / near duplicate groups | {dup['exact_groups']} / {dup['near_groups']} "
        f"({dup['photos_in_groups']} photos) |"),
        f"| duplicate groups across classes (conflicting labels) | {dup['across_classes']} |",
        f"| unreadable files | {len(sc['unreadable'])} |",
        (f"| letterbox / pillarbox / frame / one flat edge | {bor['letterbox']} / {bor['pillarbox']} / {bor['frame']} / "
        f"{bor['one_edge']} |"),
    ]
    if "leakage" in r:
        lk = r["leakage"]
        lines.append(f"| photos of {lk['against']} with a twin here | {_pct(lk['with_twin'], lk['photos'])} |")
    lines += ["", "## Label issues", "",
              ("Photos whose label the other photos do not support, the most doubtful first. `suggested` is the "
              "likeliest other class; `quality` is cleanlab's label quality (0: surely wrong, 1: surely right). "
              "Check them on the sheets before acting: some suspects are ambiguous photos, not wrong labels. "
              "`lit-garbage fit --data.exclude label_issues.csv` leaves the rows of that file out (delete the rows "
              "you want to keep first)."), "",
              "| class | photos | suspects | likely classes |", "| --- | --- | --- | --- |"]
    for name, c in li.get("per_class", {}).items():
        likely = ", ".join(f"{k} {v}" for k, v in c["likely"].items())
        lines.append(f"| {name} | {c['photos']} | {c['suspects']} | {likely} |")
    lines += ["", "Sheets: " + ", ".join(f"[{s}]({s})" for s in r.get("sheets", []) if s.startswith("label")), "",
              "| # | photo | given | suggested | quality |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {d['rank']} | {d['path']} | {d['given_label']} | {d['suggested_label']} ({d['p_suggested']:.2f}) | "
              f"{d['label_quality']:.3f} |" for d in li["items"][:LISTED]]
    if li["count"] > LISTED:
        lines.append(f"\n{li['count'] - LISTED} more in label_issues.csv.")
    lines += ["", "## Outliers", "",
              ("The photos farthest from their nearest neighbours in feature space (cleanlab OutOfDistribution): "
              "off-topic, blank, collage or heavily edited photos often end up here. A list to look at, not a verdict."),
              "", "| # | photo | label | likeliest | score |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {d['rank']} | {d['path']} | {d['label']} | {d['likeliest_label']} | {d['score']:.3f} |"
              for d in ol["items"][:LISTED]]
    lines += ["", "## What the scan knows", "", ("Class balance (largest class / smallest: "
              f"{bal['largest_to_smallest']}):"), "", "| class | photos |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in bal["per_class"].items()]
    sz = sc["sizes"]
    if sz:
        lines += ["", f"Image sizes: width {sz['width']['min']}-{sz['width']['max']} (median {sz['width']['median']}), "
                  f"height {sz['height']['min']}-{sz['height']['max']} (median {sz['height']['median']}), "
                  f"{sz['distinct_sizes']} distinct sizes; most common "
                  + ", ".join(f"{k} ({v})" for k, v in sz["most_common"].items())
                  + f"; {sz['short_side_below_224']} photos have a side under 224 px (upscaled for the model)."]
    lines += ["", (f"Flat borders (a uniform band at least {100 * bor['at_least']:.0f} % of the side): letterbox "
              f"(top and bottom) {bor['letterbox']}, pillarbox (left and right) {bor['pillarbox']}, frame (all four) "
              f"{bor['frame']}, one edge only {bor['one_edge']}, blank photos {bor.get('blank', 0)}. Padding is harmless "
              "if every class has it; a class padded more than the others teaches the model the padding.")]
    for kind, paths in bor.get("examples", {}).items():
        lines.append(f"- {kind}: " + ", ".join(paths))
    lines += ["", (f"Duplicates (same bytes, or perceptual hashes at most {dup['near_distance']} bits of 64 apart; "
              "`fit` keeps each group in one split): listed in duplicates.csv.")]
    for g in [g for g in dup["groups"] if g["across_classes"]][:LISTED]:
        lines.append(f"- {g['kind']}, across classes: " + ", ".join(f"{p} ({lab})" for p, lab in zip(g["paths"], g["labels"])))
    if sc["unreadable"]:
        lines += ["", "Unreadable files (left out of everything):"]
        lines += [f"- {u['path']}: {u['reason']}" for u in sc["unreadable"][:LISTED]]
    if "leakage" in r:
        lk = r["leakage"]
        lines += ["", f"## Leakage: twins in {lk['against']}", "",
                  (f"{_pct(lk['with_twin'], lk['photos'])} of its photos have an exact or near twin among the audited "
                  f"photos ({lk['exact']} exact; {lk['label_differs']} with another label). A model trained here and "
                  "tested there is partly tested on photos it has seen: leave the twins out of the test (leakage.csv "
                  "lists them) for an honest score."), "",
                  "| photo there | label | twin here | label | kind |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['other']} | {p['other_label']} | {p['data']} | {p['data_label']} | {p['kind']} |"
                  for p in lk["pairs"][:LISTED]]
    lines += ["", f"Audit took {r['seconds']:.0f} s. Every list in full: audit.json and the CSV files beside this one.", ""]
    return "\n".join(lines)

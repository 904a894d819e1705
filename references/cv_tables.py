"""Cross-validation tables: per recipe the mean and sample sd over its (fold, seed) runs, paired differences
against a baseline recipe (same fold, same seed), and the markdown of the summary, the runs and per-class F1."""

from __future__ import annotations

import statistics
from typing import Any, Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _get(score: dict[str, Any], *path: str) -> float | None:
    node: Any = score
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


METRICS = {  # column -> path in a score
    "cv_acc": ("test", "accuracy"), "cv_f1": ("test", "macro_f1"),
    "smoke_acc": ("smoke", "accuracy"), "smoke_f1": ("smoke", "macro_f1"),
    "int8_cv_acc": ("int8", "test", "accuracy"), "int8_smoke_acc": ("int8", "smoke", "accuracy"),
    "int8_cv_agree": ("int8", "test", "agree"), "int8_smoke_agree": ("int8", "smoke", "agree"),
    "cpu_s": ("fit_cpu_s",), "wall_s": ("fit_wall_s",), "epochs": ("epochs",),
}


def summarise(scores: Sequence[dict[str, Any]], order: Sequence[str], baseline: str | None = None
              ) -> list[dict[str, Any]]:
    """One row per recipe: n runs, mean and sd of every metric, and the paired difference to `baseline`
    (same fold, same seed) for the accuracies."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in scores:
        by_name.setdefault(s["recipe"], []).append(s)
    base = {(s["fold"], s["seed"]): s for s in by_name.get(baseline, [])} if baseline else {}
    rows = []
    for name in order:
        mine = sorted(by_name.get(name, []), key=lambda s: (s["seed"], s["fold"]))
        if not mine:
            continue
        row: dict[str, Any] = {"recipe": name, "runs": len(mine), "folds": sorted({s["fold"] for s in mine}),
                               "seeds": sorted({s["seed"] for s in mine})}
        for col, path in METRICS.items():
            vals = [v for s in mine if (v := _get(s, *path)) is not None]
            row[col] = mean_sd(vals) + (len(vals),)
        if base and name != baseline:
            for col in ("cv_acc", "smoke_acc", "int8_cv_acc", "int8_smoke_acc"):
                path = METRICS[col]
                diffs = [a - b for s in mine if (s["fold"], s["seed"]) in base
                         and (a := _get(s, *path)) is not None and (b := _get(base[(s["fold"], s["seed"])], *path)) is not None]
                m, sd = mean_sd(diffs)
                row[f"delta_{col}"] = (m, sd, len(diffs), sd / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan"))
            cpu = [s["fit_cpu_s"] / base[(s["fold"], s["seed"])]["fit_cpu_s"] for s in mine if (s["fold"], s["seed"]) in base]
            row["cpu_ratio"] = mean_sd(cpu) + (len(cpu),)
        rows.append(row)
    return rows


def _pct(v: tuple, digits: int = 1) -> str:
    m, sd, n = v[:3]
    if not n:
        return "-"
    return f"{100 * m:.{digits}f} ± {100 * sd:.{digits}f}" if n > 1 else f"{100 * m:.{digits}f}"


def _f1(v: tuple) -> str:
    m, sd, n = v[:3]
    return "-" if not n else (f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}")


def summary_markdown(rows: Sequence[dict[str, Any]], baseline: str | None = None) -> str:
    head = ("| recipe | runs (folds x seeds) | CV accuracy % | CV macro F1 | smoke accuracy % | smoke macro F1 "
            "| int8 CV % | int8 smoke % | int8 agrees CV / smoke % | epochs | fit CPU s | fit wall s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['runs']} ({len(r['folds'])} x {len(r['seeds'])}) | **{_pct(r['cv_acc'])}** "
                     f"| {_f1(r['cv_f1'])} | **{_pct(r['smoke_acc'])}** | {_f1(r['smoke_f1'])} "
                     f"| {_pct(r['int8_cv_acc'])} | {_pct(r['int8_smoke_acc'])} "
                     f"| {_pct(r['int8_cv_agree'])} / {_pct(r['int8_smoke_agree'])} | {r['epochs'][0]:.1f} "
                     f"| {r['cpu_s'][0]:.0f} ± {r['cpu_s'][1]:.0f} | {r['wall_s'][0]:.0f} |")
    deltas = [r for r in rows if "delta_cv_acc" in r]
    if deltas:
        lines += ["", f"Paired against {baseline} (same fold, same seed; mean ± sd of the differences, n, "
                      "standard error):", "",
                  "| recipe | Δ CV accuracy, points | Δ smoke accuracy, points | Δ int8 CV | Δ int8 smoke | fit CPU ratio |",
                  "|---|---|---|---|---|---|"]
        for r in deltas:
            cells = []
            for col in ("cv_acc", "smoke_acc", "int8_cv_acc", "int8_smoke_acc"):
                m, sd, n, se = r[f"delta_{col}"]
                cells.append("-" if not n else f"{100 * m:+.1f} ± {100 * sd:.1f} (n={n}, se {100 * se:.1f})"
                             if n > 1 else f"{100 * m:+.1f} (n=1)")
            ratio = r["cpu_ratio"]
            lines.append(f"| {r['recipe']} | " + " | ".join(cells) + f" | {ratio[0]:.2f}x |")
    return "\n".join(lines)


def runs_markdown(scores: Sequence[dict[str, Any]], order: Sequence[str]) -> str:
    lines = ["| recipe | fold | seed | CV accuracy % | CV macro F1 | smoke accuracy % | smoke macro F1 "
             "| int8 CV % | int8 smoke % | int8 agrees CV / smoke % | epochs | fit CPU s | fit wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rank = {n: i for i, n in enumerate(order)}
    for s in sorted(scores, key=lambda s: (rank.get(s["recipe"], 99), s["seed"], s["fold"])):
        def pc(*path):
            v = _get(s, *path)
            return "-" if v is None else f"{100 * v:.1f}"

        def f(*path):
            v = _get(s, *path)
            return "-" if v is None else f"{v:.3f}"

        lines.append(f"| {s['recipe']} | {s['fold']} | {s['seed']} | {pc('test', 'accuracy')} | {f('test', 'macro_f1')} "
                     f"| {pc('smoke', 'accuracy')} | {f('smoke', 'macro_f1')} | {pc('int8', 'test', 'accuracy')} "
                     f"| {pc('int8', 'smoke', 'accuracy')} | {pc('int8', 'test', 'agree')} / {pc('int8', 'smoke', 'agree')} "
                     f"| {s['epochs']} | {s['fit_cpu_s']:.0f} | {s['fit_wall_s']:.0f} |")
    return "\n".join(lines)


def per_class_markdown(scores: Sequence[dict[str, Any]], order: Sequence[str], part: str = "test") -> str:
    """Per-class F1, mean over a recipe's runs, one column per recipe."""
    names = [n for n in order if any(s["recipe"] == n and part in s for s in scores)]
    if not names:
        return ""
    classes = list(next(s for s in scores if part in s)[part]["per_class"])
    lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in classes:
        cells = []
        for n in names:
            vals = [s[part]["per_class"][c]["f1"] for s in scores if s["recipe"] == n and c in s.get(part, {}).get("per_class", {})]
            cells.append(f"{statistics.fmean(vals):.3f}" if vals else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

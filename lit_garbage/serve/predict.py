"""Top-k classes for images with any model file (`lit-garbage predict`): tables, JSON, CSV and the grid.

    python scripts/predict.py --model runs/demo/export/model_int8.tflite photos/ extra.jpg --top-k 3

Images are read and run by `lit_garbage.inference.files` (the one preprocessing contract, whatever the
backend; an unreadable file or a folder without images gets one clear line and the rest still runs).

Exit status: 0 when at least one image was predicted by every model; 1 when no image could be
predicted; 2 when a model cannot be loaded (the other models still run) or the arguments are wrong.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

from lit_garbage.data.images import shown
from lit_garbage.files import replaced_atomically
from lit_garbage.inference.files import (
    LoadError,
    collect_images,
    image_note,
    predict_files,
    top_k,
)


def run(args, console, errors) -> int:
    from rich.markup import escape
    from rich.table import Table

    from lit_garbage.inference.backends import (
        BackendUnavailableError,
        ModelFileError,
        load_backend,
    )

    backends = []
    failed_models = 0
    for model in args.model:
        try:
            backends.append(load_backend(model, threads=args.threads))
        except (ModelFileError, BackendUnavailableError, ValueError) as err:
            errors.print(f"[red]error:[/] model {escape(str(model))}: {escape(str(err))}")
            failed_models += 1
            continue
        if not backends[-1].has_class_names:
            errors.print(f"[yellow]warning:[/] model {escape(str(model))} carries no class names and no "
                         f"metadata.json lies beside it: showing class_0 .. class_{backends[-1].num_classes - 1}")
    if not backends:
        return 2
    args.top_k = min(args.top_k, max(b.num_classes for b in backends))  # every class at most: no empty columns

    truth: dict[Path, str] = {}
    if args.inputs:
        collected = collect_images(args.inputs)
        files, problems = collected.files, collected.problems
    else:
        from lit_garbage.evaluation.evaluate import DataError, resolve_data

        try:
            data = resolve_data(backends[0], args.model[0], args.data.root)
        except DataError as err:
            errors.print(f"[red]error:[/] no images given and {escape(str(err))}")
            return 2
        records = data.manifest.split(args.split)
        if not records:
            errors.print(f"[red]error:[/] the {args.split} split of {data.manifest_path} has no images")
            return 2
        from lit_garbage.data.manifest import check_files

        check = check_files(data.root, records)  # the images must still be the ones the manifest lists
        if check.too_many:
            errors.print(f"[red]error:[/] {escape(check.error(data.root, data.manifest_path.name))}")
            return 2
        for message in check.warnings(data.root, data.manifest_path.name):
            errors.print(f"[yellow]warning:[/] {escape(message)}")
        records = [r for r in records if r.path not in check.changed]
        files = [data.root / r.path for r in records]
        truth = {f: r.label for f, r in zip(files, records)}
        problems = []
        console.print(f"no images given: the {len(files)} images of the {args.split} split of {data.manifest_path}")
    for prob in problems:
        errors.print(f"[yellow]skipped[/] {escape(shown(prob.path))}: {escape(prob.message)}")

    if args.grid and not args.inputs:
        # The seed's figure: predict only the sampled images.
        files = _sample(files, args.grid_size, args.seed)

    notes = {f: image_note(f) for f in files}
    results: dict[str, dict] = {}
    load_errors: dict[Path, str] = {}
    per_model: list[tuple] = []
    for backend in backends:
        def report(e: LoadError) -> None:
            if e.path not in load_errors:
                load_errors[e.path] = e.message
                errors.print(f"[yellow]skipped[/] {escape(shown(e.path))}: {escape(e.message)}")

        try:
            idx, probs, _ = predict_files(backend, files, args.batch_size, on_error=report,
                                          description=f"{backend.kind} {backend.path.name}", console=errors)
        except (ModelFileError, BackendUnavailableError) as err:  # e.g. the TFJS runner: a line, the others run
            errors.print(f"[red]error:[/] model {escape(str(backend.path))}: {escape(str(err))}")
            failed_models += 1
            continue
        tops = top_k(probs, backend.class_names, args.top_k)
        per_model.append((backend, idx, probs, tops))

    predicted_any = False
    for backend, idx, probs, tops in per_model:
        label = f"{backend.kind}: {backend.path}"
        entries = []
        for i, top in zip(idx, tops):
            entries.append({"path": str(files[i]), "top_k": [{"label": l, "confidence": c} for l, c in top],
                            **({"true": truth[files[i]]} if files[i] in truth else {}),
                            **({"note": notes[files[i]]} if notes.get(files[i]) else {})})
        results[str(backend.path)] = {"kind": backend.kind, "class_names": backend.class_names,
                                      "image_size": backend.image_size, "predictions": entries}
        predicted_any = predicted_any or bool(entries)
        if not args.quiet and entries:
            table = Table(title=label, title_justify="left")
            table.add_column("image", overflow="fold")
            for r in range(min(args.top_k, backend.num_classes)):
                table.add_column(f"top-{r + 1}" if r else "prediction")
            if truth:
                table.add_column("true")
            for e in entries:
                cells = [escape(shown(_short_path(e["path"]))) + (f"\n[dim]{e['note']}[/]" if "note" in e else "")]
                cells += [f"{escape(t['label'])} [dim]{100 * t['confidence']:.1f} %[/]" for t in e["top_k"]]
                if truth:
                    ok = e["true"] == e["top_k"][0]["label"]
                    cells.append(f"[{'green' if ok else 'red'}]{escape(e['true'])}[/]")
                table.add_row(*cells)
            console.print(table)
        console.print(f"{backend.kind} {backend.path.name}: predicted {len(entries)} of {len(files)} images")

    if len(per_model) > 1:
        _print_agreement(per_model, files, console)

    errors_out = [{"path": str(p), "error": m} for p, m in load_errors.items()]
    errors_out += [{"path": str(p.path), "error": p.message} for p in problems]
    try:
        if args.json:  # file names that are not UTF-8 stay exact as JSON \udcXX escapes (Python reads them back)
            _write_atomic(args.json, lambda f: f.write(json.dumps({"models": results, "errors": errors_out},
                                                                  indent=2) + "\n"))
            console.print(f"wrote {shown(args.json)}")
        if args.csv:
            _write_csv(args.csv, results, errors_out, args.top_k)
            console.print(f"wrote {shown(args.csv)}")
    except OSError as err:
        errors.print(f"[red]error:[/] cannot write {escape(shown(err.filename or args.csv or args.json))}: "
                     f"{escape(err.strerror or str(err))} (nothing was written there)")
        return 2
    if args.grid and predicted_any:
        backend, idx, probs, tops = per_model[0]
        chosen = _sample(list(range(len(idx))), args.grid_size, args.seed)
        from lit_garbage.data.images import load_rgb
        from lit_garbage.evaluation.figures import Panel, save_grid

        panels = [Panel(load_rgb(files[idx[j]]), tops[j][0][0], tops[j][0][1], truth.get(files[idx[j]]),
                        shown(files[idx[j]].name)) for j in chosen]
        save_grid(panels, args.grid, title=f"{backend.kind}: {shown(backend.path.name)}")
        console.print(f"wrote {args.grid} ({len(panels)} images, seed {args.seed})")

    skipped = len(load_errors) + len(problems)
    if skipped:
        errors.print(f"{skipped} input(s) skipped (see the lines above)")
    if not predicted_any:
        errors.print("[red]error:[/] no image could be predicted")
        return 1
    return 2 if failed_models else 0


def _short_path(path: str) -> str:
    """The file name with its folder (the class folder, usually): the table stays readable."""
    parts = Path(path).parts
    return str(Path(*parts[-2:])) if len(parts) > 1 else path


def _sample(items: list, n: int, seed: int) -> list:
    if len(items) <= n:
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]


def _print_agreement(per_model, files, console) -> None:
    from rich.table import Table

    ref_backend, ref_idx, ref_probs, _ = per_model[0]
    ref = {i: row for i, row in zip(ref_idx, ref_probs)}
    table = Table(title=f"agreement with {ref_backend.kind} ({ref_backend.path.name})", title_justify="left")
    for col in ("model", "images", "top-1 agreement", "max |prob diff|"):
        table.add_column(col)
    for backend, idx, probs, _ in per_model[1:]:
        common = [(ref[i], row) for i, row in zip(idx, probs) if i in ref]
        if not common or backend.class_names != ref_backend.class_names:
            table.add_row(f"{backend.kind} {backend.path.name}", str(len(common)), "n/a", "n/a")
            continue
        a = np.stack([c[0] for c in common])
        b = np.stack([c[1] for c in common])
        agree = float(np.mean(a.argmax(1) == b.argmax(1)))
        table.add_row(f"{backend.kind} {backend.path.name}", str(len(common)), f"{100 * agree:.1f} %",
                      f"{np.abs(a - b).max():.2e}")
    console.print(table)


def _write_atomic(path: Path, write) -> None:
    """`write(file)` into a temporary file beside `path`, renamed into place when complete: an error or an
    interrupt leaves the previous file (or none), never half of one. UTF-8; names that are not shown as \\xNN."""
    with replaced_atomically(path) as tmp, tmp.open("w", newline="", encoding="utf-8",
                                                    errors="backslashreplace") as f:
        write(f)


def _write_csv(path: Path, results: dict, errors_out: list, k: int) -> None:
    header = ["model", "kind", "path"]
    for r in range(1, k + 1):
        header += [f"label_{r}", f"confidence_{r}"]
    header += ["true", "error"]

    def write(f) -> None:
        writer = csv.writer(f)
        writer.writerow(header)
        for model, res in results.items():
            for e in res["predictions"]:
                row = [shown(model), res["kind"], shown(e["path"])]
                tops = e["top_k"] + [{"label": "", "confidence": ""}] * (k - len(e["top_k"]))
                for t in tops[:k]:
                    row += [t["label"], f"{t['confidence']:.6f}" if t["confidence"] != "" else ""]
                writer.writerow(row + [e.get("true", ""), ""])
        for e in errors_out:
            writer.writerow(["", "", shown(e["path"])] + [""] * (2 * k) + ["", e["error"]])

    _write_atomic(path, write)


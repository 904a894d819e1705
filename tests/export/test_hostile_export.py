"""Hostile exports: an export loses nothing it did not write, and ships nothing that names this machine.

The refusals happen before the checkpoint is even loaded (no conversion runs), so most tests here cost
milliseconds; the scan of shipped bytes reuses the session's one tiny export (tests/fixtures_export.py).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import stat
import sys
from pathlib import Path

from lit_garbage.commands import export as ex
from lit_garbage.export.exporter import MARKER
from lit_garbage.files import file_mode

REPO = Path(__file__).resolve().parents[2]


def _export_folder(path: Path) -> Path:
    """A folder that looks like an earlier export (what a re-export may replace)."""
    path.mkdir(parents=True)
    (path / MARKER).write_text("written by lit_garbage.export; safe to replace\n")
    (path / "labels.txt").write_text("a\nb\n")
    return path


def test_an_export_never_deletes_its_input_or_files_it_did_not_write(one_epoch_copy, tmp_path, monkeypatch,
                                                                      capsys):
    # The self-contained layout runs.py looks for: the checkpoint and split.csv copied into an export folder.
    bundle = _export_folder(tmp_path / "bundle")
    shutil.copy(one_epoch_copy / "model.ckpt", bundle / "model.ckpt")
    shutil.copy(one_epoch_copy / "split.csv", bundle / "split.csv")
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    code = ex.main(["--model", str(bundle / "model.ckpt"), "--out", str(bundle), "--formats", "onnx", "--no-verify"])
    err = capsys.readouterr().err
    assert code == 2 and "model.ckpt" in err and "Traceback" not in err, err[-800:]
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before

    # A user's own file in an earlier export: named, kept, nothing converted.
    earlier = _export_folder(tmp_path / "earlier")
    (earlier / "notes.txt").write_text("mine")
    (earlier / "split.csv").write_text("path,label,split\n")
    code = ex.main(["--model", str(one_epoch_copy / "model.ckpt"), "--out", str(earlier), "--formats", "onnx",
                    "--no-verify"])
    err = capsys.readouterr().err
    assert code == 2 and "notes.txt" in err and "split.csv" in err, err[-800:]
    assert (earlier / "notes.txt").read_text() == "mine" and (earlier / "split.csv").is_file()

    # --out . (or a folder holding the working folder) from inside an export: refused before any conversion.
    for out, cwd in ((".", earlier), ("..", earlier / "sub")):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        (earlier / "notes.txt").unlink(missing_ok=True)
        code = ex.main(["--model", str(one_epoch_copy / "model.ckpt"), "--out", out, "--formats", "onnx",
                        "--no-verify"])
        captured = capsys.readouterr()
        assert code == 2 and "current folder" in captured.err and "Traceback" not in captured.err, captured.err
        assert "[onnx]" not in captured.out, "a refused export converted first"
        assert not list(earlier.parent.glob(".*partial*"))


def test_an_export_refuses_a_data_root_or_manifest_inside_its_output(one_epoch_copy, tmp_path, capsys):
    out = _export_folder(tmp_path / "out")
    manifest = out / "saved_model"  # a name an export writes: would be replaced whole
    manifest.mkdir()
    shutil.copy(one_epoch_copy / "split.csv", manifest / "split.csv")
    code = ex.main(["--model", str(one_epoch_copy / "model.ckpt"), "--out", str(out), "--formats", "onnx",
                    "--no-verify", "--data.manifest", str(manifest / "split.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "--data.manifest" in err, err[-500:]
    assert (manifest / "split.csv").is_file()


def _private_strings() -> set[bytes]:
    """What would tell where this machine keeps its files and whose they are."""
    found = {str(REPO), str(Path(sys.prefix).resolve()), sys.prefix, str(Path.home()), os.path.realpath(Path.home())}
    user = getpass.getuser()
    found |= {f"/{user}/", f"\\{user}\\"}
    return {s.encode() for s in found if len(s) > 2}


def test_no_exported_file_names_this_machines_paths_or_user(tiny_export):
    out: Path = tiny_export["out"]
    private = _private_strings() | {str(tiny_export["run"].parent).encode(), str(tiny_export["data"]).encode()}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 8
    leaks = {}
    for path in files:
        data = path.read_bytes()
        hits = sorted(s.decode() for s in private if s in data)
        if hits:
            leaks[str(path.relative_to(out))] = hits
        # Every shipped file readable like the others (safetensors writes 0600 by itself).
        assert stat.S_IMODE(path.stat().st_mode) == file_mode(), (path, oct(path.stat().st_mode))
    assert not leaks, f"exported files name this machine: {leaks}"
    meta = json.loads((out / "metadata.json").read_text())
    for key in ("checkpoint", "split_manifest"):
        for value in meta[key].values():
            assert not (isinstance(value, str) and os.path.isabs(value)), (key, value)


def test_an_export_beside_its_run_still_finds_the_run_data(tiny_export, tmp_path):
    """Relative records: the export copied with its run to another place evaluates there."""
    from lit_garbage.runs import find_run_data

    meta = json.loads((tiny_export["out"] / "metadata.json").read_text())
    assert meta["checkpoint"]["path"] == "../model.ckpt"
    found = find_run_data(tiny_export["out"] / "model.onnx", export=(meta, tiny_export["out"]))
    assert found.root is not None and found.root.resolve() == Path(tiny_export["data"]).resolve()
    assert found.manifest is not None and found.manifest.is_file()


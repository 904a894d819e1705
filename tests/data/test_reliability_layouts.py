"""Reliability: bad dataset layouts give actionable messages and leave no run directory behind."""

from __future__ import annotations

import pytest
from PIL import Image

from lit_garbage.data.manifest import DatasetError, build_manifest
from lit_garbage.training.cli import main
from tests.conftest import fit_args


def _images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.effect_noise((16, 16), 40 + seed + i).convert("RGB").save(folder / f"{i}.png")


LAYOUTS = {
    "missing": (lambda r: None, "does not exist"),
    "empty": (lambda r: r.mkdir(), "no class sub-folders.*empty"),
    "loose images": (lambda r: _images(r, 3), "put each class's images into a sub-folder"),
    "one class": (lambda r: _images(r / "a", 12), "at least 2"),
    "nested one level": (lambda r: [_images(r / "dataset" / c, 12) for c in "ab"], "one level deeper.*dataset"),
    "empty class": (lambda r: [_images(r / "a", 12), (r / "b").mkdir()], "without images.*b"),
    "too small": (lambda r: [_images(r / "a", 12), _images(r / "b", 2)], "stratified.*b: 2"),
    "only hidden files": (lambda r: [_images(r / "a", 12), _images(r / "b", 0),
                                     (r / "b" / ".DS_Store").write_bytes(b"x")], "without images.*b"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_bad_layout_fails_clearly_through_the_cli_and_leaves_no_run_directory(layout, tmp_path):
    make, expected = LAYOUTS[layout]
    root = tmp_path / "data"
    make(root)
    run_dir = tmp_path / "run"
    with pytest.raises(DatasetError, match=expected):
        main(fit_args(root, run_dir))
    assert not run_dir.exists()


def test_command_line_gets_the_message_without_a_traceback(tmp_path, capsys):
    from lit_garbage.commands.main import main as lit_garbage

    assert lit_garbage(["fit", *fit_args(tmp_path / "nowhere", tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset root") and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_nested_folders_inside_a_class_belong_to_that_class(tmp_path):
    _images(tmp_path / "a", 6)
    _images(tmp_path / "a" / "bottles", 6, seed=100)  # a/bottles/*.png are class "a", as in ImageFolder
    _images(tmp_path / "b", 12, seed=200)
    manifest = build_manifest(tmp_path)
    assert manifest.class_names == ("a", "b")
    assert sum(r.path.startswith("a/bottles/") and r.label == "a" for r in manifest.records) == 6


def test_failure_after_scan_removes_the_run_directory_it_created(tmp_path, synthetic_root, monkeypatch):
    # The dataset is fine and gets scanned (split.csv written), then the model cannot be built (a bad backbone
    # name is refused before the scan, so the build itself fails here).
    from lit_garbage.models import network

    scanned = []

    def cannot_build(*args, **kwargs):
        scanned.append((run_dir / "split.csv").is_file())
        raise RuntimeError("the backbone cannot be built")

    monkeypatch.setattr(network, "create_backbone", cannot_build)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="cannot be built"):
        main(fit_args(synthetic_root, run_dir))
    assert scanned == [True] and not run_dir.exists()
    # An existing directory (the user's) is never removed.
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="cannot be built"):
        main(fit_args(synthetic_root, run_dir))
    assert (run_dir / "notes.txt").exists()

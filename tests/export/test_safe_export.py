"""Exports: a pickled checkpoint is never exported, an export carries its weights without a pickle
(model.safetensors), and evaluating an export never unpickles the checkpoint beside it.

One real export (`lit-garbage export --formats onnx --no-verify`) of a real 1-epoch run, made in place
(RUN/export), as a user makes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_garbage.commands import evaluate as ev
from lit_garbage.commands import export as ex
from lit_garbage.commands import predict as pr
from lit_garbage.files import sha256_file
from tests.forged_files import UNSAFE_GLOBAL, an_image, edit_checkpoint, forge_pickle, ran


@pytest.fixture(scope="module")
def exported_run(one_epoch_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(one_epoch_run, run, ignore=shutil.ignore_patterns("image_cache"))
    assert ex.main(["--model", str(run / "model.ckpt"), "--formats", "onnx", "--no-verify"]) == 0
    return run


@pytest.fixture
def exported_copy(exported_run, tmp_path) -> Path:
    """A private copy of the exported run, its metadata.json pointing at the copy's own checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    meta_file = run / "export" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["checkpoint"]["path"] = str(run / "model.ckpt")
    meta_file.write_text(json.dumps(meta))
    return run


def test_export_refuses_a_checkpoint_with_pickled_code(one_epoch_copy, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = forge_pickle(one_epoch_copy / "model.ckpt", one_epoch_copy / "evil.ckpt", marker)
    code = ex.main(["--model", str(evil), "--formats", "onnx", "--no-verify", "--out", str(tmp_path / "export")])
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"unpickling {evil} ran its code {ran(marker)} time(s) (exit {code})"
    assert code == 2
    assert "evil.ckpt" in err and UNSAFE_GLOBAL in err and "Traceback" not in err, err[-1500:]
    assert not (tmp_path / "export").exists()


def test_an_export_carries_its_weights_as_safetensors(exported_run, synthetic_root, tmp_path, capsys):
    """model.safetensors: every weight of the network, and what rebuilds it, without a pickle. It predicts what
    the checkpoint predicts (predict / evaluate take it) and starts a new run (`--model.weights`)."""
    from safetensors.torch import load_file

    from lit_garbage.inference.backends import load_backend
    from lit_garbage.models.network import create_backbone

    out = exported_run / "export"
    weights = out / "model.safetensors"
    assert weights.is_file(), f"the export holds {sorted(p.name for p in out.iterdir())}, no model.safetensors"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["weights"]["file"] == "model.safetensors" and meta["weights"]["sha256"] == sha256_file(weights)
    state = torch.load(exported_run / "model.ckpt", weights_only=True)["state_dict"]
    loaded = load_file(str(weights))
    net = {k: v for k, v in state.items() if k.startswith("net.")}
    assert set(loaded) == set(net) and all(torch.equal(loaded[k], net[k]) for k in net)

    images = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    from_weights = load_backend(weights)
    assert from_weights.class_names == meta["class_names"]
    assert np.abs(from_weights.predict(images) - load_backend(exported_run / "model.ckpt").predict(images)).max() < 1e-6
    assert pr.main(["--model", str(weights), str(an_image(synthetic_root)), "--quiet"]) == 0
    capsys.readouterr()

    backbone = create_backbone("mobilenetv2_100", weights=str(weights))  # --model.weights EXPORT/model.safetensors
    assert torch.equal(backbone.state_dict()["conv_stem.weight"], state["net.backbone.conv_stem.weight"])


def test_evaluate_on_an_export_never_opens_the_checkpoint_beside_it(exported_copy, tmp_path, capsys):
    """The export records the dataset root itself: the checkpoint it was made from is not needed, so a forged
    one there is never unpickled (nor even read)."""
    marker = tmp_path / "marker"
    forge_pickle(exported_copy / "model.ckpt", exported_copy / "model.ckpt", marker)
    code = ev.main(["--model", str(exported_copy / "export" / "model.onnx"), "--out", str(tmp_path / "eval")])
    out = capsys.readouterr()
    assert ran(marker) == 0, f"evaluating the export unpickled {exported_copy / 'model.ckpt'} (exit {code})"
    assert code == 0, out.err[-1500:]
    assert UNSAFE_GLOBAL not in out.err + out.out, "the checkpoint beside the export was read"


@pytest.mark.parametrize("beside", ["pickled code, the recorded sha256", "another checkpoint"])
def test_an_older_export_reads_the_checkpoint_beside_it_as_data_only(beside, exported_copy, tmp_path, capsys,
                                                                     monkeypatch):
    """Exports made before the dataset root was recorded find it in the checkpoint they were made from: that
    file is read only if its sha256 is the one metadata.json recorded, and then as tensors and plain data."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nor does this machine's export index know it
    marker = tmp_path / "marker"
    ckpt = exported_copy / "model.ckpt"
    meta_file = exported_copy / "export" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["split_manifest"].pop("dataset_root", None)  # as written before
    if beside.startswith("pickled"):
        forge_pickle(ckpt, ckpt, marker)
        meta["checkpoint"]["sha256"] = sha256_file(ckpt)  # a forged export names its forged checkpoint's hash
    else:
        edit_checkpoint(ckpt, lambda c: c["datamodule_hyper_parameters"].update(root=str(tmp_path / "elsewhere")))
    meta_file.write_text(json.dumps(meta))
    code = ev.main(["--model", str(exported_copy / "export" / "model.onnx"), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"evaluating the export unpickled {ckpt} (exit {code})"
    assert "Traceback" not in err, err[-1500:]
    said = " ".join(err.split())  # rich wraps long lines
    if beside.startswith("pickled"):
        assert code == 2 and "--data.root" in err, err[-1500:]
        assert "model.ckpt" in said and UNSAFE_GLOBAL in said, err[-1500:]
    else:
        # Not read; the run's split is still found through the manifest path the export records (relative to it).
        assert "is not the checkpoint this export was made from" in said, err[-1500:]
        assert code == 0, err[-1500:]

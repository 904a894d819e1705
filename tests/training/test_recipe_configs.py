"""The recipe files say only what differs: every recipe but seed.yaml (and the demo's small CPU run) is an overlay,
`base: seed.yaml` plus its changes, and resolves to exactly seed.yaml with those changes."""

from __future__ import annotations

import pytest
import yaml

from lit_garbage.data.datamodule import GarbageDataModule
from lit_garbage.training.cli import GarbageCLI, main
from lit_garbage.training.config_files import BASE_KEY, config_chain, expand_bases
from lit_garbage.training.module import GarbageClassifier
from references.cv import Recipe
from tests.conftest import REPO

CONFIGS = REPO / "configs"
SEED = CONFIGS / "seed.yaml"
# Whole recipes: seed.yaml, the base of all; demo.yaml, `make demo`'s small from-scratch CPU run (it changes
# most of seed.yaml's values, so it is written out). Every other recipe is an overlay on seed.yaml.
WHOLE = {"seed.yaml", "demo.yaml"}
OVERLAYS = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in WHOLE)


class _Parsed(Exception):
    pass


class _ParseOnly(GarbageCLI):
    """The resolved config, before anything is built or any run directory is claimed."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config)


def resolved(*args: str) -> dict:
    with pytest.raises(_Parsed) as parsed:
        _ParseOnly(GarbageClassifier, GarbageDataModule, run=False, args=list(args), auto_configure_optimizers=False)
    cfg = parsed.value.args[0].as_dict()
    cfg.pop("config", None)
    return cfg


def flat(d: dict, prefix: str = "") -> dict:
    """{'model.lr': 0.001, ...}: nested sections as dotted keys, lists as values."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value and "class_path" not in value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def same_value(resolved_value, listed) -> bool:
    """A listed value as the parser resolves it (class entries gain their defaults' init_args)."""
    if resolved_value is None or listed is None:
        return resolved_value is listed
    if isinstance(listed, list) and listed and isinstance(listed[0], dict) and "class_path" in listed[0]:
        return len(resolved_value) == len(listed) and all(
            r["class_path"] == c["class_path"] and c.get("init_args", {}).items() <= r["init_args"].items()
            for r, c in zip(resolved_value, listed))
    if isinstance(listed, list):
        return list(resolved_value) == listed
    return resolved_value == listed


def test_every_recipe_but_the_whole_ones_is_an_overlay_on_seed_yaml():
    assert OVERLAYS, "no overlay recipes found"
    for name in OVERLAYS:
        chain = config_chain(CONFIGS / name)
        assert chain[0] == SEED and len(chain) >= 2, (
            f"configs/{name} repeats a whole recipe: start it with `{BASE_KEY}: seed.yaml` and list only its changes")
    for name in WHOLE:
        assert config_chain(CONFIGS / name) == [CONFIGS / name]


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_recipe_equals_seed_yaml_plus_its_listed_changes(name):
    seed = flat(resolved("--config", str(SEED)))
    recipe = flat(resolved("--config", str(CONFIGS / name)))
    listed = flat({k: v for k, v in yaml.safe_load((CONFIGS / name).read_text()).items() if k != BASE_KEY})
    assert listed, f"configs/{name} changes nothing"
    for key, value in listed.items():
        assert key in recipe, f"configs/{name}: {key} is not an option"
        assert same_value(recipe[key], value), f"configs/{name}: {key} resolves to {recipe[key]!r}, lists {value!r}"
        assert not same_value(seed.get(key), value), f"configs/{name}: {key} repeats seed.yaml's value {value!r}"
    unchanged = {k for k in recipe if k not in listed}
    assert {k: recipe[k] for k in unchanged} == {k: seed[k] for k in unchanged}


def test_improved_yaml_is_the_seed_recipe_with_label_smoothing_and_the_weight_average():
    recipe = flat(resolved("--config", str(CONFIGS / "improved.yaml")))
    assert recipe["model.label_smoothing"] == 0.1 and recipe["trainer.max_epochs"] == 12
    assert [c["class_path"] for c in recipe["trainer.callbacks"]] == ["lightning.pytorch.callbacks.EMAWeightAveraging"]
    assert recipe["freeze.trainable_layers"] == 21 and recipe["model.lr"] == 0.0005  # seed.yaml's


def test_overlays_chain_merge_and_yield_to_the_command_line(tmp_path):
    (tmp_path / "base.yaml").write_text(SEED.read_text())
    (tmp_path / "mid.yaml").write_text("base: base.yaml\nmodel:\n  lr: 0.002\n  dropout: 0.2\n")
    (tmp_path / "top.yaml").write_text("base: mid.yaml\nmodel:\n  dropout: 0.3\ndata:\n  augment:\n    zoom: 0.0\n")
    assert config_chain(tmp_path / "top.yaml") == [tmp_path / n for n in ("base.yaml", "mid.yaml", "top.yaml")]
    cfg = flat(resolved("--config", str(tmp_path / "top.yaml"), "--model.dropout", "0.4"))
    assert (cfg["model.lr"], cfg["model.dropout"], cfg["data.augment.zoom"]) == (0.002, 0.4, 0.0)
    assert cfg["data.augment.rotation"] == 25.0 and cfg["model.l2"] == 0.0001  # the rest of base.yaml, merged
    assert flat(resolved(f"--config={tmp_path / 'top.yaml'}"))["model.dropout"] == 0.3
    # A whole file, or YAML given on the command line, passes through unchanged.
    assert expand_bases(["--config", str(SEED), "--model.lr", "1"]) == ["--config", str(SEED), "--model.lr", "1"]


def test_a_missing_or_circular_base_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\nmodel:\n  lr: 0.1\n")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    for name, message in (("lost.yaml", "nowhere.yaml is not a file"), ("a.yaml", "cycle")):
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(tmp_path / name), "--run_dir", str(tmp_path / "run")])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_printed_config_is_whole_and_names_no_base(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(CONFIGS / "improved.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert BASE_KEY not in printed and printed["model"]["label_smoothing"] == 0.1
    assert printed["data"]["augment"]["rotation"] == 25.0  # seed.yaml's value, written out


def test_cv_runs_of_an_overlay_start_afresh_when_its_base_changes(tmp_path):
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text("model:\n  lr: 0.001\n")
    overlay.write_text("base: base.yaml\nmodel:\n  dropout: 0.2\n")
    recipe = Recipe("overlay", ("--config", str(overlay)))
    before = recipe.identity([])
    base.write_text("model:\n  lr: 0.002\n")
    assert recipe.identity([]) != before

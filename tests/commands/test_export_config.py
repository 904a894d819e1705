"""`lit-garbage export`'s options are one typed config (`ExportConfig`): every option once in `--print_config`, read
back with `--config`, overridden by flags, the same whatever the spelling, bounded in one line, and handed to the
exporter as it was given."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest
import yaml

from lit_garbage.commands import export as ex
from lit_garbage.commands.parsing import make_config
from lit_garbage.export.config import ExportConfig, Int8Options


def _config(argv: list[str]) -> ExportConfig:
    parser = ex.build_parser()
    return make_config(parser, parser.parse_args(argv), ExportConfig)


def _keys(config: type, prefix: str = "") -> set[str]:
    """Every option of a config dataclass, its groups' as `group.option`."""
    out = set()
    for f in fields(config):
        if is_dataclass(f.default_factory):  # a group: int8, data
            out |= _keys(f.default_factory, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_print_config_prints_every_export_option_once_and_reads_back_with_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--print_config"])  # no model yet: the template to fill in
    assert exit_.value.code == 0 and set(_flat(yaml.safe_load(capsys.readouterr().out))) == _keys(ExportConfig)
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--model", "m.ckpt", "--print_config"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    printed = _flat(yaml.safe_load(text))
    assert set(printed) == _keys(ExportConfig), text
    top = [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()]
    assert len(top) == len(set(top)), text  # each option once
    assert {"int8.float_convs", "int8.calib_images", "data.root", "formats", "verify"} <= set(printed)
    assert printed["int8.float_convs"] == Int8Options().float_convs and printed["formats"]
    saved = tmp_path / "export.yaml"
    saved.write_text(text)
    assert _config(["--config", str(saved)]) == _config(["--model", "m.ckpt"])


def test_a_config_file_with_a_flag_after_it_the_flag_wins(tmp_path):
    saved = tmp_path / "export.yaml"
    saved.write_text("model: runs/x/model.ckpt\nformats: [onnx, int8]\nint8:\n  calib_images: 50\n  float_convs: 16\n")
    config = _config(["--config", str(saved), "--int8.float_convs", "4"])
    assert config.int8 == Int8Options(calib_images=50, float_convs=4)
    assert config.formats == ["onnx", "int8"] and str(config.model) == "runs/x/model.ckpt"
    assert config.verify is True and config.verify_images == ExportConfig(model="m").verify_images  # the defaults


@pytest.mark.parametrize("old,new", [
    (["--int8-float-convs", "12"], ["--int8.float_convs", "12"]),
    (["--int8-float-convs=12"], ["--int8.float_convs=12"]),
    (["--calib-images", "7"], ["--int8.calib_images", "7"]),
    (["--int8-ranges", "mse"], ["--int8.ranges", "mse"]),
    (["--no-int8-float-classifier"], ["--int8.float_classifier", "false"]),
    (["--int8-float-classifier"], ["--int8.float_classifier"]),
    (["--no-verify"], ["--verify", "false"]),
    (["--verify-images", "9"], ["--verify_images", "9"]),
    (["--no-tflite-metadata"], ["--tflite_metadata", "false"]),
    (["--model-name", "bins", "--model-version", "2"], ["--model_name", "bins", "--model_version", "2"]),
    (["--data", "d", "--manifest", "s.csv"], ["--data.root", "d", "--data.manifest", "s.csv"]),
    (["--verbose"], ["--verbose", "true"]),
    (["--formats", "onnx", "tflite"], ["--formats", "onnx", "tflite"]),
])
def test_an_old_spelling_and_the_new_one_give_the_same_config(old, new):
    made = _config(["--model", "m.ckpt", *old])
    assert made == _config(["--model", "m.ckpt", *new])
    assert made != _config(["--model", "m.ckpt"]) or old == ["--int8-float-classifier"]  # the flag did something


def test_a_bad_value_in_a_config_file_is_one_line_naming_its_key(tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"  # never read: the refusal comes first
    saved = tmp_path / "export.yaml"
    saved.write_text(f"model: {missing}\nint8:\n  float_convs: -1\n")
    assert ex.main(["--config", str(saved)]) == 2
    assert capsys.readouterr().err == "error: int8.float_convs must be an integer from 0 to 1,000, got -1\n"
    saved.write_text(f"model: {missing}\nint8:\n  float_convs: many\n")
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--config", str(saved)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(errors) == 1 and "int8.float_convs" in errors[0] and "many" in errors[0]
    saved.write_text(f"model: {missing}\nint8:\n  float_conv: 3\n")  # a misspelt key is named too
    with pytest.raises(SystemExit):
        ex.main(["--config", str(saved)])
    assert "float_conv" in capsys.readouterr().err


def test_a_bound_is_named_as_it_was_written(tmp_path, capsys):
    for flag in ("--int8.float_convs", "--int8-float-convs"):
        assert ex.main(["--model", str(tmp_path / "missing.ckpt"), flag, "-3"]) == 2
        assert capsys.readouterr().err == f"error: {flag} must be an integer from 0 to 1,000, got -3\n"


@pytest.mark.parametrize("flags", [["--int8.float_convs", "12"], ["--int8-float-convs", "12"]])
def test_int8_float_convs_reaches_the_exporter(flags, tmp_path, monkeypatch, capsys):
    from lit_garbage.export import exporter

    seen = []

    def made(config, **kwargs):
        seen.append(config)
        raise exporter.ExportError("stopped before any model loads")

    monkeypatch.setattr(exporter, "Exporter", made)
    assert ex.main(["--model", str(tmp_path / "m.ckpt"), *flags, "--formats", "int8"]) == 2
    assert "stopped before" in capsys.readouterr().err
    (config,) = seen
    assert isinstance(config, ExportConfig) and config.int8.float_convs == 12 and config.formats == ["int8"]
    assert config.int8.float_classifier is True and config.int8.ranges == "minmax"  # the rest as defaulted


@pytest.mark.parametrize("command,argv,changed", [
    ("evaluate", ["--model", "m.onnx", "--split", "val", "test", "--batch-size", "8", "--tta"],
     {"split": ["val", "test"], "batch_size": 8, "tta": True}),
    ("serve", ["--export", "runs/x/export", "--port", "0", "--quiet"], {"port": 0, "quiet": True}),
    ("predict", ["--model", "a.onnx", "--model", "b.tflite", "photos", "--top-k", "5", "--data", "d"],
     {"model": ["a.onnx", "b.tflite"], "inputs": ["photos"], "top_k": 5, "data": {"root": "d"}}),
    ("parity", ["--export", "runs/x/export", "--no-mediapipe", "--data-root", "d", "--split", "val"],
     {"mediapipe": False, "data": {"root": "d"}, "split": "val"}),
])
def test_every_typed_command_prints_its_options_and_reads_them_back(command, argv, changed, tmp_path, capsys):
    import importlib

    module = importlib.import_module(f"lit_garbage.commands.{command}")
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, "--print_config"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    assert {k: printed[k] for k in changed} == changed, text
    saved = tmp_path / f"{command}.yaml"
    saved.write_text(text)
    parser, config = module.build_parser(), getattr(module, f"{command.capitalize()}Config")
    assert make_config(parser, parser.parse_args(["--config", str(saved)]), config) == \
        make_config(parser, parser.parse_args(argv), config)


def test_evaluate_names_a_bound_as_written_and_from_a_file_by_its_key(tmp_path, capsys):
    from lit_garbage.commands import evaluate as ev

    for flag in ("--batch-size", "--batch_size"):
        assert ev.main(["--model", str(tmp_path / "m.onnx"), flag, "0"]) == 2
        assert capsys.readouterr().err == f"error: {flag} must be an integer from 1 to 4,096, got 0\n"
    saved = tmp_path / "eval.yaml"
    saved.write_text(f"model: {tmp_path / 'm.onnx'}\nworst: 13\n")
    assert ev.main(["--config", str(saved)]) == 2
    assert capsys.readouterr().err == "error: worst must be an integer from 0 to 12, got 13\n"


def test_predict_reads_its_earlier_spellings():
    from lit_garbage.commands import predict as pr

    parser = pr.build_parser()

    def made(argv):
        return make_config(parser, parser.parse_args(["--model", "m.tflite", *argv]), pr.PredictConfig)

    old = made(["--top-k", "5", "--grid-size", "4", "--batch-size", "8", "--data-root", "d", "x.jpg"])
    assert old == made(["--top_k", "5", "--grid_size", "4", "--batch_size", "8", "--data.root", "d", "x.jpg"])
    assert (old.top_k, old.grid_size, old.batch_size, str(old.data.root)) == (5, 4, 8, "d")
    bare = made(["--quiet", "x.jpg"])  # a yes/no option alone, before an image: the image stays an image
    assert bare.quiet is True and bare.inputs == ["x.jpg"]

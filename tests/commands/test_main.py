"""The one `lit-garbage` command: every subcommand listed, reachable, with its own --help; scripts/ are aliases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lit_garbage.commands.main import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "export", "evaluate", "predict", "serve", "import-keras"):
        assert f"\n  {name} " in out, f"{name} missing from:\n{out}"


def test_unknown_or_missing_subcommand_is_refused(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert f"lit-garbage {name}" in capsys.readouterr().out


@pytest.mark.parametrize("script,name", [("fit.py", "fit"), ("export_all.py", "export"), ("evaluate.py", "evaluate"),
                                         ("predict.py", "predict"), ("serve_demo.py", "serve"),
                                         ("import_keras.py", "import-keras")])
def test_scripts_are_aliases_of_the_subcommands(script, name):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: lit-garbage {name}" in proc.stdout


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "lit_garbage", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("lit-garbage ")


@pytest.mark.parametrize("command,old,new", [
    ("export", ["--ckpt", "m.ckpt", "--data-root", "d", "--manifest", "s.csv"],
     ["--model", "m.ckpt", "--data.root", "d", "--data.manifest", "s.csv"]),
    ("evaluate", ["--model", "m.onnx", "--data", "d", "--manifest", "s.csv"],
     ["--model", "m.onnx", "--data.root", "d", "--data.manifest", "s.csv"]),
    ("predict", ["--model", "m.tflite", "--data", "d"], ["--model", "m.tflite", "--data.root", "d"]),
])
def test_one_fact_has_one_flag_in_every_command_and_old_spellings_still_work(command, old, new, capsys):
    import importlib

    parser = importlib.import_module(SUBCOMMANDS[command][0]).build_parser()
    assert parser.parse_args(old) == parser.parse_args(new)
    parser.print_help()
    shown = capsys.readouterr().out
    assert "--model" in shown and "--data.root" in shown
    assert "--data-root" not in shown and "--ckpt" not in shown and "--data " not in shown


def test_export_still_requires_a_model(capsys):
    from lit_garbage.commands.export import main as export

    with pytest.raises(SystemExit) as exit_:
        export(["--out", "x"])
    assert exit_.value.code == 2 and "required: --model" in capsys.readouterr().err


def test_importing_the_package_leaves_tensorflows_log_level_alone():
    import os

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", "import os, lit_garbage; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr[-2000:]


@pytest.mark.parametrize("argv,user,level", [
    (["export"], None, "2"),  # quiet by default
    (["export", "--verbose"], None, None),  # --verbose: TensorFlow's own logs are shown
    (["export"], "0", "0"),  # a level the user set is kept
    (["predict"], None, "2"),
    (["predict"], "1", "1"),
])
def test_commands_hide_tensorflows_logs_unless_export_is_verbose(argv, user, level, tmp_path, monkeypatch):
    """Set before the command imports TensorFlow (which reads it once); the model file is missing, so the command
    stops early with exit status 2."""
    import os

    if user is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", user)
    assert main([argv[0], "--model", str(tmp_path / "missing.ckpt"), *argv[1:]]) == 2
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level

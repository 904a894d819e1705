"""The lab runs from a checkout: `python -m references.X` from its root, `python scripts/X.py` from anywhere, with
its data and outputs inside the checkout by default."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from references import experiments

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["cv", "latency"])
def test_the_lab_runs_as_a_module_from_the_checkout_and_as_a_script_from_anywhere(module, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    as_module = subprocess.run([sys.executable, "-m", f"references.{module}", "--help"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    assert as_module.returncode == 0, as_module.stderr[-2000:]
    assert f"usage: python -m references.{module}" in as_module.stdout
    as_script = subprocess.run([sys.executable, str(REPO / "scripts" / f"{module}.py"), "--help"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=300, check=False)
    assert as_script.returncode == 0, as_script.stderr[-2000:]
    assert as_script.stdout == as_module.stdout


def test_real_photos_are_looked_up_in_the_checkout_first(tmp_path, monkeypatch):
    monkeypatch.delenv(experiments.REAL_DATA_ENV, raising=False)
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(experiments, "CHECKOUT", checkout)
    assert experiments.real_data("train") is None
    (tmp_path / "shared" / "data" / "real" / "train").mkdir(parents=True)
    assert experiments.real_data("train") == tmp_path / "shared" / "data" / "real" / "train"
    (checkout / "data" / "real" / "train").mkdir(parents=True)
    assert experiments.real_data("train") == checkout / "data" / "real" / "train"
    monkeypatch.setenv(experiments.REAL_DATA_ENV, str(tmp_path / "elsewhere"))
    assert experiments.real_data("train") is None


def test_experiment_outputs_default_to_the_checkouts_runs_folder():
    from references import cv

    parser = experiments.experiment_parser("x", "x", "y")
    assert parser.parse_args([]).out == REPO / "runs" / "recipes"
    p = argparse.ArgumentParser()
    cv.add_protocol_args(p)
    assert p.parse_args([]).out == REPO / "runs" / "cv"

"""`fit --model.weights FILE` reads the file as data before the dataset scan: a torch file holding Python objects
or a Keras file with a Lambda layer is refused there, naming the file and what it holds (exit 2, nothing
written), and its code never runs.
"""

from __future__ import annotations

from tests.conftest import fit_args
from tests.forged_files import UNSAFE_GLOBAL, call_main, forge_pickle, ran


def test_fit_refuses_backbone_weights_with_pickled_code(one_epoch_run, synthetic_root, tmp_path, capsys):
    from lit_garbage.training import cli

    marker = tmp_path / "marker"
    evil = forge_pickle(one_epoch_run / "model.ckpt", tmp_path / "backbone.pth", marker)
    run_dir = tmp_path / "run"
    outcome = call_main(cli.main, fit_args(synthetic_root, run_dir, "--model.weights", str(evil),
                                           "--trainer.max_epochs", "1"))
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"--model.weights unpickled code from {evil}"
    assert outcome == ("exit", 2), f"{outcome}: {err[-800:]}"
    assert "backbone.pth" in err and UNSAFE_GLOBAL in err, err[-1500:]
    assert not run_dir.exists()  # refused as a config fact: nothing scanned, nothing written


def test_fit_keras_weights_never_run_lambda_code(keras2_lambda, synthetic_root, tmp_path, capsys):
    from lit_garbage.training import cli

    marker = keras2_lambda["marker"]
    marker.unlink(missing_ok=True)
    run_dir = tmp_path / "run"
    outcome = call_main(cli.main, fit_args(synthetic_root, run_dir, "--model.weights", f"keras:{keras2_lambda['h5']}",
                                           "--trainer.max_epochs", "1"))
    err = capsys.readouterr().err
    assert ran(marker) == 0, f"--model.weights keras:PATH ran the file's Lambda code ({outcome[0]} {outcome[1]!r})"
    assert outcome == ("exit", 2), f"{outcome}: {err[-800:]}"
    assert "evil.h5" in err and "'innocent'" in err and "Lambda" in err, err[-1500:]
    assert not run_dir.exists()

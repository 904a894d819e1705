"""Self-describing model files: every exported file, copied alone, still knows its class names and input
contract, and MediaPipe's ImageClassifier runs the .tflite files as they are.

Uses the test suite's tiny export (4 classes, 64 px, trained on synthetic shapes). On real photos its answers
mean nothing as garbage classes, but they are a fair input for "MediaPipe computes what our pipeline
computes": the photos are only inputs here. No mocks: LiteRT, MediaPipe 1.2.2, tflite-support's metadata
reader, onnxruntime, TensorFlow and tfjs in Node all run.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import mediapipe as mp
import numpy as np
import onnx
import pytest
from mediapipe.tasks.python import BaseOptions, vision
from tensorflow_lite_support.metadata.python import metadata as tflite_metadata

from lit_garbage.artifacts import FACTS_FILE, FACTS_KEY, embedded_facts, read_facts
from lit_garbage.commands import evaluate as ev
from lit_garbage.commands import predict as pr
from lit_garbage.commands.export import main as export_main
from lit_garbage.data.images import load_rgb
from lit_garbage.data.transforms import resize_uint8
from lit_garbage.export import exporter as exporter_mod
from lit_garbage.export import metadata as md
from lit_garbage.export.config import ExportConfig
from lit_garbage.formats import FORMATS
from lit_garbage.inference.backends import NO_NAMES, load_backend
from tests.fixtures_export import CLASSES, IMAGE_SIZE

TFLITE = ["tflite_float32", "tflite_float16", "tflite_int8", "tflite_int16x8"]
OWN = "the model file's own metadata"
PHOTO_STEP = 10  # every 10th of the 200 smoke photos: 20 photos, 2 per class


@pytest.fixture(scope="module")
def export(tiny_export) -> dict:
    out = tiny_export["out"]
    meta = json.loads((out / "metadata.json").read_text())
    return {**tiny_export, "meta": meta, "facts": embedded_facts(meta)}


@pytest.fixture(scope="module")
def test_images(export) -> np.ndarray:
    """8 of the model's own test images, NCHW float32 [0, 1]."""
    import torch

    from lit_garbage.export.samples import run_data

    data = run_data(torch.load(export["ckpt"], map_location="cpu", weights_only=False), export["ckpt"])
    return data.load(data.pick("test", 8), IMAGE_SIZE)


def _alone(src: Path, tmp_path: Path) -> Path:
    """`src` copied into an empty folder: no metadata.json or labels.txt beside it."""
    folder = tmp_path / "alone"
    folder.mkdir(exist_ok=True)
    if src.is_dir():
        return Path(shutil.copytree(src, folder / src.name))
    return Path(shutil.copy(src, folder / src.name))


def _classifier(path: Path):
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=-1, score_threshold=0.0)  # every class, with its score
    return vision.ImageClassifier.create_from_options(options)


def _mediapipe_scores(classifier, rgb: np.ndarray) -> tuple[str, np.ndarray]:
    """(top-1 category name, scores in output order) for an HWC uint8 RGB array."""
    result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    (head,) = result.classifications
    scores = np.zeros(len(CLASSES), np.float32)
    for c in head.categories:
        scores[c.index] = c.score
    return head.categories[0].category_name, scores


def _mediapipe_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """MediaPipe's CPU resize, emulated: the whole image stretched to size x size, image corners onto tensor
    corners, bilinear without antialiasing, uint8."""
    import cv2

    h, w = rgb.shape[:2]
    m = cv2.getAffineTransform(np.float32([[0, h], [0, 0], [w, 0]]), np.float32([[0, size], [0, 0], [size, 0]]))
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _reference_kernels(path: Path):
    """The .tflite file on LiteRT's reference kernels (no XNNPACK): HWC uint8 RGB -> probabilities."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def run(hwc_uint8: np.ndarray) -> np.ndarray:
        it.set_tensor(inp["index"], hwc_uint8[None].astype(np.float32) / 255.0)
        it.invoke()
        return it.get_tensor(out["index"])[0].copy()

    return run


def _nchw(hwc_uint8: np.ndarray) -> np.ndarray:
    return (hwc_uint8.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


# ------------------------------------------------------------------ TFLite files alone


@pytest.mark.parametrize("name", TFLITE)
def test_tflite_file_alone_carries_standard_metadata_and_predicts_real_names(export, name, test_images, tmp_path):
    inside = export["out"] / FORMATS[name].file
    path = _alone(inside, tmp_path)
    backend = load_backend(path, threads=1)
    assert backend.class_names == CLASSES and backend.image_size == IMAGE_SIZE
    assert backend.names_source == OWN
    assert np.array_equal(backend.predict(test_images), load_backend(inside, threads=1).predict(test_images))
    assert read_facts(path) == export["facts"]  # stdlib zipfile, no TensorFlow / tflite-support
    assert "path" not in export["facts"]["checkpoint"] and "created" not in export["facts"]  # nothing local

    shown = tflite_metadata.MetadataDisplayer.with_model_file(str(path))  # the standard reader
    std = json.loads(shown.get_metadata_json())
    assert (std["name"], std["version"], std["author"], std["license"]) == ("lit-garbage", "0.1.0", "lit-garbage", "MIT")
    assert "pixel / 255" in std["description"] and "antialiased bilinear" in std["description"]
    (sub,) = std["subgraph_metadata"]
    (inp,), (out,) = sub["input_tensor_metadata"], sub["output_tensor_metadata"]
    assert inp["content"]["content_properties"]["color_space"] == "RGB"
    (norm,) = inp["process_units"]
    assert norm["options_type"] == "NormalizationOptions"
    assert norm["options"] == {"mean": [0.0] * 3, "std": [255.0] * 3}  # never the backbone's per-channel values
    assert inp["stats"] == {"min": [0.0] * 3, "max": [1.0] * 3}
    (labels,) = out["associated_files"]
    assert labels["type"] == "TENSOR_AXIS_LABELS"
    assert shown.get_associated_file_buffer(labels["name"]).decode().splitlines() == CLASSES
    assert json.loads(shown.get_associated_file_buffer(FACTS_FILE)) == export["facts"]

    # Reproducible: the same model and facts give the same bytes (fixed zip dates).
    data = path.read_bytes()
    assert md.tflite_with_metadata(data, export["facts"]) == data
    with zipfile.ZipFile(path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    # The export checked this file's outputs before and after writing its metadata, then verified it.
    notes = export["verify"]["model_files"]
    assert any(n.startswith(f"`{FORMATS[name].file}`") and "bitwise unchanged" in n for n in notes), notes


def test_metadata_writer_changes_no_output_and_a_bare_file_falls_back_clearly(export, test_images, tmp_path, capsys):
    """A .tflite file without metadata (converted here from the SavedModel): it loads with class_0.., says so,
    MediaPipe refuses it; after `write_tflite_metadata` LiteRT computes bitwise the same and it is described."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(export["out"] / "saved_model"))
    bare = tmp_path / "bare" / "model.tflite"
    bare.parent.mkdir()
    bare.write_bytes(converter.convert())
    assert read_facts(bare) is None
    backend = load_backend(bare, threads=1)
    assert backend.class_names == [f"class_{i}" for i in range(len(CLASSES))] and backend.image_size == IMAGE_SIZE
    assert not backend.has_class_names and backend.names_source == NO_NAMES
    before = backend.predict(test_images)
    image = next((export["data"] / CLASSES[0]).iterdir())
    assert pr.main(["--model", str(bare), str(image)]) == 0
    assert "carries no class names" in capsys.readouterr().err
    with pytest.raises(Exception, match="NormalizationOptions"):
        _classifier(bare)

    result = md.write_tflite_metadata(bare, export["facts"])
    assert result["max_abs_diff"] == 0.0 and result["bytes_added"] > 0
    described = load_backend(bare, threads=1)
    assert described.class_names == CLASSES and described.names_source == OWN
    assert np.array_equal(described.predict(test_images), before)
    with _classifier(bare) as classifier:
        top, _ = _mediapipe_scores(classifier, np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    assert top in CLASSES


# ------------------------------------------------------------------ MediaPipe on real photos


@pytest.fixture(scope="module")
def photos(real_smoke) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """(path, full-size RGB array, the project's own resize to S x S) for 20 real photos."""
    found = sorted(p for p in real_smoke.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::PHOTO_STEP]
    out = []
    for p in found:
        pil = load_rgb(p)
        pre = resize_uint8(IMAGE_SIZE)(pil).permute(1, 2, 0).contiguous().numpy()
        out.append((p, np.ascontiguousarray(np.asarray(pil)), pre))
    return out


@pytest.mark.parametrize("name", TFLITE)
def test_mediapipe_loads_the_file_alone_and_names_our_classes_on_real_photos(export, name, photos, tmp_path):
    path = _alone(export["out"] / FORMATS[name].file, tmp_path)
    ours = load_backend(path, threads=1)  # the project's LiteRT pipeline on the same file
    torch_ref = load_backend(export["ckpt"])
    integer = name in ("tflite_int8", "tflite_int16x8")
    reference = _reference_kernels(path) if integer else None
    full_agree = emulated_agree = 0
    worst = spread = 0.0
    with _classifier(path) as classifier:
        for photo, full, pre in photos:
            p_ours = ours.predict(_nchw(pre))[0]
            # Pre-resized by our own preprocessing: MediaPipe's resize is the identity, the answers must match.
            top, scores = _mediapipe_scores(classifier, pre)
            assert top == CLASSES[int(p_ours.argmax())], photo
            worst = max(worst, float(np.abs(scores - p_ours).max()))
            if integer:
                spread = max(spread, float(np.abs(reference(pre) - p_ours).max()))
            if name == "tflite_float32":
                p_torch = torch_ref.predict(_nchw(pre))[0]
                first, second = np.sort(p_torch)[::-1][:2]
                if first - second > 1e-4:  # a near tie may flip between any two float32 runtimes
                    assert top == CLASSES[int(p_torch.argmax())], photo
            # Full size: MediaPipe resizes itself, without antialiasing.
            top_full, _ = _mediapipe_scores(classifier, full)
            full_agree += top_full == CLASSES[int(p_ours.argmax())]
            emulated_agree += top_full == CLASSES[int(ours.predict(_nchw(_mediapipe_resize(full, IMAGE_SIZE))).argmax())]
    # Float files: the same arithmetic (measured <= 3.6e-6). Integer kernels round differently from one
    # implementation to the next (LiteRT's XNNPACK and reference kernels, MediaPipe's own build; measured on the
    # real seed model's int8 files, 20 photos: 2.3e-2 to 6.6e-2 between any two of them, top-1 equal):
    # MediaPipe must stay within twice the spread of LiteRT's own two kernel sets on these photos, and one int8
    # output step (1/256).
    tol = max(1 / 256, 2 * spread) if integer else 1e-4
    assert worst <= tol, f"MediaPipe differs from ours by {worst:.2e}; LiteRT's own kernels by {spread:.2e}"
    n = len(photos)
    print(f"\n{name}: MediaPipe top-1 = ours on {n}/{n} pre-resized photos (max score diff {worst:.1e}; LiteRT's "
          f"reference kernels vs ours {spread:.1e}); "
          f"full-size photos (MediaPipe's own resize): {full_agree}/{n} = ours, {emulated_agree}/{n} = ours on "
          "MediaPipe's resize emulated")
    # What differs on full-size photos is MediaPipe's resize alone: emulating it gives MediaPipe's answer
    # (research: 198-200 of the 200 smoke photos on this tiny model).
    assert emulated_agree >= 0.9 * n


# ------------------------------------------------------------------ the other formats


def test_onnx_saved_model_and_tfjs_carry_the_same_facts_alone(export, test_images, tmp_path):
    facts, out = export["facts"], export["out"]
    # ONNX: the facts under `lit_garbage`, ONNX's own keys beside them; onnxruntime sees them too.
    onnx_alone = _alone(out / "model.onnx", tmp_path)
    assert read_facts(onnx_alone) == facts
    model = onnx.load(str(onnx_alone))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[FACTS_KEY]) == facts and json.loads(props["class_names"]) == CLASSES
    assert (props["model_author"], props["model_license"]) == ("lit-garbage", "MIT")
    assert props["Image.NominalPixelRange"] == "Normalized_0_1" and props["Image.BitmapPixelFormat"] == "Rgb8"
    assert model.graph.input[0].type.denotation == "IMAGE" and "pixel / 255" in model.doc_string
    import onnxruntime as ort

    meta = ort.InferenceSession(str(onnx_alone), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(meta.custom_metadata_map[FACTS_KEY])["class_names"] == CLASSES
    backend = load_backend(onnx_alone)
    assert backend.class_names == CLASSES and backend.image_size == IMAGE_SIZE and backend.names_source == OWN
    # The shipped model.onnx is torch's, not onnx2tf's simplified copy (onnxsim rewrites the file it is given
    # in place: it clears producer_name and adds onnxsim.* props).
    assert model.producer_name == "pytorch"
    assert not [k for k in props if k.startswith("onnxsim")]

    saved = _alone(out / "saved_model", tmp_path)
    assert read_facts(saved) == facts  # assets.extra/lit_garbage.json
    assert (saved / "assets.extra" / "labels.txt").read_text().splitlines() == CLASSES
    backend = load_backend(saved)
    assert backend.class_names == CLASSES and backend.names_source == OWN

    tfjs = _alone(out / "tfjs", tmp_path)
    spec = json.loads((tfjs / "model.json").read_text())
    assert spec["userDefinedMetadata"] == {FACTS_KEY: facts}  # its own key: no clash with tfjs's `signature`
    backend = load_backend(tfjs)
    assert backend.class_names == CLASSES and backend.names_source == OWN
    probs = backend.predict(test_images[:2])  # in Node: the runner returns GraphModel.metadata
    assert backend.last_metadata[FACTS_KEY]["class_names"] == CLASSES
    assert np.abs(probs - load_backend(out / "tfjs").predict(test_images[:2])).max() == 0.0


def test_evaluate_on_a_file_copied_alone_reports_real_class_names(export, tmp_path):
    path = _alone(export["out"] / "model_int8.tflite", tmp_path)
    assert ev.main(["--model", str(path), "--data.root", str(export["data"]), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (split,) = metrics["splits"]
    assert metrics["class_names"] == CLASSES and split["images"] == 160
    assert list(split["report"])[:len(CLASSES)] == CLASSES


@pytest.mark.parametrize("name", ["onnx", "tflite_float32", "tfjs"])
def test_a_file_with_its_metadata_stripped_falls_back_to_numbered_classes(export, name, tmp_path):
    path = _alone(export["out"] / FORMATS[name].file, tmp_path)
    if name == "onnx":
        model = onnx.load(str(path))
        del model.metadata_props[:]
        onnx.save_model(model, str(path))
    elif name == "tfjs":
        spec = json.loads(path.read_text())
        del spec["userDefinedMetadata"]
        path.write_text(json.dumps(spec))
    else:
        path.write_bytes(md.strip_tflite_associated_files(path.read_bytes()))
    assert read_facts(path) is None
    backend = load_backend(path)
    assert backend.class_names == [f"class_{i}" for i in range(len(CLASSES))] and backend.image_size == IMAGE_SIZE
    assert not backend.has_class_names
    # metadata.json beside the file is still the first choice
    shutil.copy(export["out"] / "metadata.json", path.parent / "metadata.json")
    assert load_backend(path).class_names == CLASSES and load_backend(path).names_source == "metadata.json"


# ------------------------------------------------------------------ without the writer


def test_export_without_tflite_support_fails_early_naming_the_pip_command(export, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(md, "_WRITERS", "tflite_support_not_installed_here.metadata_writers")
    assert md.tflite_writer_problem() == md.missing_writer_message()
    code = export_main(["--model", str(export["ckpt"]), "--out", str(tmp_path / "o"), "--formats", "int8"])
    assert code == 2
    err = capsys.readouterr().err
    assert md.TFLITE_SUPPORT_PIP in err and "--no-tflite-metadata" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    # Opting out needs no writer; the TFLite files then stay as converted and every report says so.
    exp = exporter_mod.Exporter(ExportConfig(model=export["ckpt"], out=tmp_path / "o", formats=["tflite"],
                                                    tflite_metadata=False))
    copy = Path(shutil.copytree(export["out"], tmp_path / "copy"))
    bare = md.strip_tflite_associated_files((copy / "model_float32.tflite").read_bytes())
    (copy / "model_float32.tflite").write_bytes(bare)
    exp.embedded = md.embed_facts(copy, export["facts"], ["tflite_float32"], tflite=False)
    assert (copy / "model_float32.tflite").read_bytes() == bare
    (note,) = exp.metadata_notes()
    assert note.startswith("**WARNING** `model_float32.tflite`") and "MediaPipe" in note


def test_export_with_a_writer_that_does_not_load_fails_early_naming_the_system_library(export, tmp_path,
                                                                                      monkeypatch, capsys):
    # Installed, yet its compiled modules cannot load (a minimal system without libusb-1.0): found out before
    # any conversion, with the library and the opt-out named, not as a traceback after minutes of work.
    assert md.tflite_writer_problem() is None
    monkeypatch.setitem(sys.modules, f"{md._WRITERS}.metadata_writer", None)  # its import now raises ImportError
    problem = md.tflite_writer_problem()
    assert problem and "does not load" in problem and md.LIBUSB_APT in problem
    code = export_main(["--model", str(export["ckpt"]), "--out", str(tmp_path / "o"), "--formats", "int8"])
    assert code == 2
    err = capsys.readouterr().err
    assert md.LIBUSB_APT in err and "--no-tflite-metadata" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(md.MetadataError, match="libusb-1.0"):
        md.tflite_with_metadata((export["out"] / "model_float32.tflite").read_bytes(), export["facts"])

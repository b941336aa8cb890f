"""segedge.Predictor and `segedge predict`: frames of any size in, masks at their size out, for every artifact
kind the project writes; one mask reproduced by an independent computation (numpy + onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segedge.cli.main import main
from segedge.core.errors import ArtifactError
from segedge.flows.export import ExportConfig, export_model
from segedge.flows.predict import Predictor
from test_own_data import blobs, nhwc_grey, sigmoid_one_channel  # noqa: F401  (blobs is a fixture)

SIZE = (64, 128)


@pytest.fixture(scope="module")
def artifacts(tiny_checkpoint, tmp_path_factory):
    store = tmp_path_factory.mktemp("predict")
    from segedge.graph.int8 import Int8Config

    fixed = export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2,
                                      precisions=("fp16", "int8"), int8_config=Int8Config(calib_images=4), store=store,
                                      threads=1))
    dynamic = export_model(ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=2,
                                        dynamic=True, store=store, threads=1))
    return fixed, dynamic


def frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    from segedge.data.synthetic import SyntheticScenes

    image, _ = SyntheticScenes("val", 1, size=(64, 128), seed=seed).batch(0, 1)
    from segedge.data.transforms import resize_bilinear

    return resize_bilinear(image[0], (h, w))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_precision_gives_a_mask_at_the_frames_size(artifacts, precision):
    fixed, _ = artifacts
    with Predictor(fixed.directory, precision=precision, threads=1) as predictor:
        for h, w in [(64, 128), (70, 100), (33, 257)]:
            mask = predictor(frame(h, w))
            assert mask.shape == (h, w) and mask.dtype == np.uint8
            assert mask.max() < len(predictor.class_names)
    assert predictor.timings.frames == 3 and predictor.timings.fps > 0


def test_one_mask_matches_an_independent_computation(artifacts):
    import onnxruntime as ort

    fixed, _ = artifacts
    image = frame(*SIZE, seed=3)
    manifest = fixed.manifest
    mean = np.array(manifest["normalization"]["mean"], np.float32)
    std = np.array(manifest["normalization"]["std"], np.float32)
    x = ((image.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(fixed.file("sim")), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0][0].argmax(0)
    with Predictor(fixed.file("sim"), threads=1) as predictor:
        assert predictor.precision == "fp32"
        np.testing.assert_array_equal(predictor(image), want)


def test_grey_and_bgr_frames(artifacts):
    fixed, _ = artifacts
    image = frame(*SIZE, seed=1)
    with Predictor(fixed.directory, precision="fp32", threads=1) as predictor:
        np.testing.assert_array_equal(predictor(image[..., ::-1].copy(), bgr=True), predictor(image))
        grey = image.mean(axis=2).astype(np.uint8)
        assert predictor(grey).shape == SIZE
        mask, scores = predictor(frame(50, 90), scores=True)
        assert scores.shape == (len(predictor.class_names), 50, 90) and mask.shape == (50, 90)


def test_a_dynamic_model_is_padded_to_its_stride_not_resized(artifacts):
    _, dynamic = artifacts
    image = frame(70, 100, seed=2)
    with Predictor(dynamic.directory, threads=1) as predictor:
        assert predictor.dynamic and predictor.multiple == 16
        mask = predictor(image)
        assert mask.shape == (70, 100)
        # the padded frame's own prediction, cropped: the same pixels
        padded = np.zeros((80, 112, 3), np.uint8)
        padded[:70, :100] = image
        np.testing.assert_array_equal(predictor(padded)[:70, :100], mask)


@pytest.mark.parametrize("build", [nhwc_grey, sigmoid_one_channel])
def test_models_made_elsewhere(build, blobs, tmp_path):  # noqa: F811
    onnx_path = build(tmp_path / "m.onnx")
    result = export_model(ExportConfig(model="", onnx=onnx_path, data=f"folder:{blobs}", mean=(0.0,), std=(1.0,),
                                       store=tmp_path / "store", threads=1))
    bright = np.full((64, 64, 3), 220, np.uint8)
    bright[:10] = 10
    with Predictor(result.directory, threads=1) as predictor:
        mask = predictor(bright)
    assert mask.shape == (64, 64)
    assert (mask[10:] == 1).all() and (mask[:10] == 0).all()  # bright is foreground, dark is background


def test_predict_command_writes_palette_masks_and_overlays(artifacts, tmp_path, capsys):
    fixed, _ = artifacts
    source = tmp_path / "frames"
    source.mkdir()
    for i, (h, w) in enumerate([(64, 128), (48, 80)]):
        Image.fromarray(frame(h, w, seed=i)).save(source / f"f{i}.jpg")
    assert main(["predict", str(fixed.directory), "--source", str(source), "--out", str(tmp_path / "masks"),
                 "--overlay", "--quiet", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "2 masks" in out and "FPS end to end" in err and "inference" in err
    mask = Image.open(tmp_path / "masks" / "f1.png")
    assert mask.mode == "P" and mask.size == (80, 48)
    assert mask.text["classes"].split(",")[0] == fixed.manifest["class_names"][0]
    assert (tmp_path / "masks" / "f0.overlay.png").is_file()


def test_mistakes_are_one_line(artifacts, tmp_path, capsys):
    fixed, _ = artifacts
    with pytest.raises(ArtifactError, match="no segedge manifest.json"):
        Predictor(tmp_path)
    code = main(["predict", str(fixed.directory), "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code == 1 and "names no image" in capsys.readouterr().err
    _, dynamic = artifacts
    code = main(["predict", str(dynamic.directory), "--precision", "int8", "--source", str(tmp_path), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_predictor_scores_the_same_miou_as_segedge_eval(artifacts, capsys):
    """The application's numbers are the table's: the Predictor's masks on labelled images give the mIoU that
    `segedge eval` reports for the same artifact on the same images."""
    import json as _json

    from segedge.core.metrics import ConfusionMatrix
    from segedge.data.synthetic import SyntheticScenes

    fixed, _ = artifacts
    artifact = fixed.file("int8")
    assert main(["eval", "--onnx", str(artifact), "--images", "4", "--input-size", "64x128", "--json", "--quiet",
                 "--threads", "1"]) == 0
    reported = _json.loads(capsys.readouterr().out)["mean_iou"]
    scenes = SyntheticScenes("val", 4, size=SIZE)
    cm = ConfusionMatrix(len(fixed.manifest["class_names"]))
    with Predictor(artifact, threads=1) as predictor:
        for i in range(4):
            image, mask = scenes[i]
            cm.update(mask, predictor(image))
    assert cm.scores().mean_iou == pytest.approx(reported, abs=1e-9)


def test_a_video_comes_back_with_the_masks_blended_in(artifacts, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2", reason="video needs opencv-python-headless, a segedge dependency")
    fixed, _ = artifacts
    source = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (100, 60))
    for i in range(5):
        writer.write(frame(60, 100, seed=i)[..., ::-1].copy())  # OpenCV writes BGR
    writer.release()
    assert main(["predict", str(fixed.directory), "--source", str(source), "--out", str(tmp_path / "out"), "--quiet",
                 "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "5 frames with masks" in out and "FPS end to end" in err
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.masks.avi"))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    assert len(frames) == 5 and frames[0].shape == (60, 100, 3)


def test_predict_reads_a_16_bit_image_as_its_8_bit_original(artifacts, tmp_path, capsys):
    """Pillow's I;16 → RGB clips at 255; predict reads depth the way eval and bench do, so masks match."""
    fixed, _ = artifacts
    source = tmp_path / "frames"
    source.mkdir()
    grey = frame(*SIZE, seed=4).mean(axis=2).astype(np.uint8)
    Image.fromarray(grey).save(source / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(source / "sixteen.png")
    assert Image.open(source / "sixteen.png").mode == "I;16"
    assert main(["predict", str(fixed.directory), "--source", str(source), "--out", str(tmp_path / "masks"),
                 "--quiet", "--threads", "1"]) == 0
    capsys.readouterr()
    masks = [np.asarray(Image.open(tmp_path / "masks" / f"{name}.png")) for name in ("eight", "sixteen")]
    np.testing.assert_array_equal(masks[1], masks[0])


def test_predict_never_writes_over_an_input(artifacts, tmp_path, capsys):
    """--out the --source folder: the mask of a.png would have replaced the picture; refused before any write."""
    fixed, _ = artifacts
    source = tmp_path / "frames"
    source.mkdir()
    Image.fromarray(frame(*SIZE, seed=5)).save(source / "a.png")
    before = (source / "a.png").read_bytes()
    code = main(["predict", str(fixed.directory), "--source", str(source), "--out", str(source), "--quiet",
                 "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "a.png" in err and "--out" in err
    assert (source / "a.png").read_bytes() == before and sorted(p.name for p in source.iterdir()) == ["a.png"]
    # a glob of JPEGs into their own folder is fine: no mask is named like an input
    Image.fromarray(frame(*SIZE, seed=6)).save(source / "b.jpg")
    assert main(["predict", str(fixed.directory), "--source", str(source / "*.jpg"), "--out", str(source), "--quiet",
                 "--threads", "1"]) == 0
    assert (source / "a.png").read_bytes() == before and Image.open(source / "b.png").mode == "P"


def test_inputs_that_share_a_name_get_a_mask_each(artifacts, tmp_path, capsys):
    """a.png and a.jpg in one folder: "2 masks" means two files, each the mask of its own picture."""
    fixed, _ = artifacts
    source = tmp_path / "frames"
    source.mkdir()
    images = {"a.png": frame(*SIZE, seed=7), "a.jpg": frame(*SIZE, seed=8)[::-1].copy(), "c.png": frame(*SIZE, seed=9)}
    for name, image in images.items():
        Image.fromarray(image).save(source / name)
    out = tmp_path / "masks"
    assert main(["predict", str(fixed.directory), "--source", str(source), "--out", str(out), "--overlay", "--quiet",
                 "--threads", "1"]) == 0
    said = capsys.readouterr()
    assert "3 masks" in said.out and "a.jpg" in said.err and "a.png" in said.err  # the names are said
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.overlay.png", "a.jpg.png", "a.png.overlay.png",
                                                       "a.png.png", "c.overlay.png", "c.png"]
    from segedge.data.datasets import read_rgb

    with Predictor(fixed.directory, threads=1) as predictor:
        for name, mask_name in [("a.png", "a.png.png"), ("a.jpg", "a.jpg.png"), ("c.png", "c.png")]:
            np.testing.assert_array_equal(np.asarray(Image.open(out / mask_name)), predictor(read_rgb(source / name)))


def test_two_inputs_that_would_write_one_file_are_refused_before_any_write(artifacts, tmp_path, capsys):
    fixed, _ = artifacts
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        Image.fromarray(frame(*SIZE)).save(tmp_path / folder / "x.png")
    out = tmp_path / "masks"
    code = main(["predict", str(fixed.directory), "--source", str(tmp_path / "d*" / "x.png"), "--out", str(out),
                 "--quiet", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert str(tmp_path / "d1" / "x.png") in err and str(tmp_path / "d2" / "x.png") in err
    assert not out.exists()


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 40, 3), (30, 0), (0, 0)])
def test_an_empty_frame_is_a_one_line_error(artifacts, shape):
    from segedge.core.errors import SegedgeError

    fixed, dynamic = artifacts
    for artifact in (fixed, dynamic):
        with Predictor(artifact.directory, precision="fp32", threads=1) as predictor:
            with pytest.raises(SegedgeError) as error:
                predictor(np.zeros(shape, np.uint8))
        assert "empty" in str(error.value) and "\n" not in str(error.value)

"""Models as they come, on data as it comes: ONNX files written the way other tools write them (NHWC grey at
opset 12, a one-channel sigmoid at opset 12, a stride-4 head, external weights), benchmarked with
`segedge bench --profile cpu --onnx … --data folder:…`; every mIoU a row stores is reproduced here by an
independent computation (numpy thresholds, onnxruntime on the stored file, a hand-written IoU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segedge.cli.main import main
from segedge.core.results import ResultsStore

SIZE = 64
F = TensorProto.FLOAT
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# data: bright blobs on a dark noisy background; label = the clean blob mask --------------------------------

@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(24):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(8, SIZE - 8, 2).tolist() + [int(rng.integers(5, 14))]
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        grey = np.where(mask == 1, 170.0, 80.0) + rng.normal(0, 45, (SIZE, SIZE))
        rgb = np.clip(np.stack([grey * 1.05, grey, grey * 0.9], axis=-1), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"b{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"b{i:02d}.png")
    (root / "classes.txt").write_text("background\nblob\n")
    return root


def val_samples(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The evaluation images: segedge's deterministic holdout of a folder without splits (25 % by file-name hash)."""
    from segedge.data.datasets import SegmentationFolder

    stems = [s.image.stem for s in SegmentationFolder(root, "val", holdout=0.25).samples]
    return [(np.asarray(Image.open(root / "images" / f"{s}.png").convert("RGB")),
             np.asarray(Image.open(root / "masks" / f"{s}.png"))) for s in stems]


def miou(pairs) -> float:
    """Mean IoU over the classes present in labels or predictions, summed over all images (no segedge code)."""
    inter, union = np.zeros(2), np.zeros(2)
    for label, pred in pairs:
        for c in (0, 1):
            inter[c] += np.logical_and(label == c, pred == c).sum()
            union[c] += np.logical_or(label == c, pred == c).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


# models, written with onnx.helper as other exporters write them --------------------------------------------

def _save(nodes, inputs, outputs, inits, path: Path, opset: int) -> Path:
    graph = helper.make_graph(nodes, "theirs", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def nhwc_grey(path: Path) -> Path:
    """Keras-style: N×H×W×1 input on the 0–1 scale, Transpose→Conv→Transpose, N×H×W×2 scores out."""
    w = numpy_helper.from_array(np.array([[[[-10.0]]], [[[10.0]]]], np.float32), "w")
    b = numpy_helper.from_array(np.array([5.0, -5.0], np.float32), "b")
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w", "b"], ["logits"]),
             helper.make_node("Transpose", ["logits"], ["scores"], perm=[0, 2, 3, 1])]
    return _save(nodes, [helper.make_tensor_value_info("image", F, ["n", SIZE, SIZE, 1])],
                 [helper.make_tensor_value_info("scores", F, ["n", SIZE, SIZE, 2])], [w, b], path, 12)


def sigmoid_one_channel(path: Path) -> Path:
    """Binary segmentation as salient-object and medical nets ship it: one Sigmoid channel."""
    w = numpy_helper.from_array((10 * LUMA).reshape(1, 3, 1, 1), "w")
    b = numpy_helper.from_array(np.array([-5.0], np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["prob"])]
    return _save(nodes, [helper.make_tensor_value_info("image", F, [1, 3, SIZE, SIZE])],
                 [helper.make_tensor_value_info("prob", F, [1, 1, SIZE, SIZE])], [w, b], path, 12)


def stride4(path: Path) -> Path:
    """A head at a quarter of the input's resolution (mmseg models before their final resize)."""
    w = numpy_helper.from_array(np.stack([-10 * LUMA, 10 * LUMA]).reshape(2, 3, 1, 1), "w")
    b = numpy_helper.from_array(np.array([5.0, -5.0], np.float32), "b")
    nodes = [helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["pooled", "w", "b"], ["logits"])]
    return _save(nodes, [helper.make_tensor_value_info("image", F, [1, 3, SIZE, SIZE])],
                 [helper.make_tensor_value_info("logits", F, [1, 2, SIZE // 4, SIZE // 4])], [w, b], path, 13)


def grey01(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ LUMA) / 255.0


def bilinear(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N×C×h×w → N×C×H×W with align_corners=False, as torch's F.interpolate and mmseg's resize do (no segedge code):
    output pixel i samples the input at (i + 0.5)·in/out - 0.5, floored at 0, its right neighbour clamped to the
    edge. Written as one interpolation matrix per axis."""

    def matrix(src: int, dst: int) -> np.ndarray:
        m = np.zeros((dst, src))
        for i in range(dst):
            x = max((i + 0.5) * src / dst - 0.5, 0.0)
            left = int(x)
            right = min(left + 1, src - 1)
            m[i, left] += 1 - (x - left)
            m[i, right] += x - left
        return m

    rows, cols = matrix(scores.shape[2], size[0]), matrix(scores.shape[3], size[1])
    return np.einsum("yh,nchw,xw->ncyx", rows, scores.astype(np.float64), cols)


def expected_fp32(kind: str, pairs) -> float:
    if kind in ("nhwc", "sigmoid"):
        return miou([(label, grey01(rgb) > 0.5) for rgb, label in pairs])
    pooled = [grey01(rgb).reshape(SIZE // 4, 4, SIZE // 4, 4).mean(axis=(1, 3)) for rgb, _ in pairs]
    scores = [np.stack([-10 * (p - 0.5), 10 * (p - 0.5)])[None] for p in pooled]
    return miou([(label, bilinear(s, (SIZE, SIZE))[0].argmax(0)) for s, (_, label) in zip(scores, pairs)])


BUILDERS = {"nhwc": nhwc_grey, "sigmoid": sigmoid_one_channel, "stride4": stride4}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_their_onnx_on_their_data_gets_fp32_and_int8_rows_that_reproduce(kind, blobs, tmp_path, capsys):
    onnx_path = BUILDERS[kind](tmp_path / f"{kind}.onnx")
    store = tmp_path / "r.sqlite"
    code = main(["bench", "--profile", "cpu", "--onnx", f"{kind}={onnx_path}", "--data", f"folder:{blobs}",
                 "--mean", "0", "--std", "1", "--precisions", "fp32,int8", "--quick", "--quiet", "--calib-images", "4",
                 "--quantize-classifier",  # these nets are little more than their classifier: quantize it too
                 "--results", str(store), "--out", str(tmp_path / "export")])
    out, err = capsys.readouterr()
    assert code == 0, err
    with ResultsStore(store) as results:
        rows = {r["precision"]: r for r in results.rows()}
    assert set(rows) == {"fp32", "int8"} and all(r["model"] == kind for r in rows.values())
    pairs = val_samples(blobs)
    assert rows["fp32"]["eval_images"] == len(pairs) == 6  # the whole holdout by default
    want = expected_fp32(kind, pairs)
    assert 0.5 < want < 0.98  # a figure that can fail: neither trivial nor perfect
    assert rows["fp32"]["miou"] == pytest.approx(want, abs=2e-3)
    assert rows["fp32"]["reference_miou"] == pytest.approx(want, abs=2e-3)

    # the INT8 row's mIoU is what onnxruntime gives on the stored INT8 file, scored independently
    import onnxruntime as ort

    from segedge.data.model_io import ModelIO

    artifact = Path(rows["int8"]["artifact"])
    manifest = json.loads((artifact.parent / "manifest.json").read_text())
    io = ModelIO.from_dict(manifest["io"])
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = []
    for rgb, label in pairs:
        x = grey01(rgb)[None, ..., None] if kind == "nhwc" else (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]
        out = session.run(None, {name: x})[0]
        if kind == "nhwc":
            pred = out[0].argmax(-1)
        elif kind == "sigmoid":
            pred = out[0, 0] > 0.5
        else:
            pred = bilinear(out, (SIZE, SIZE))[0].argmax(0)
        predicted.append((label, pred))
    assert rows["int8"]["miou"] == pytest.approx(miou(predicted), abs=2e-3)
    assert manifest["stages"]["int8"]["quantize_nodes"] > 0 and manifest["stages"]["int8"]["float_classifier"] == []
    assert rows["int8"]["drop_low"] <= rows["int8"]["miou_drop"] <= rows["int8"]["drop_high"]
    if kind == "nhwc":
        assert io.input_layout == "NHWC" and io.channels == 1
        assert "grey" in err  # RGB images fed to a grey model: said once
    if kind == "sigmoid":
        assert io.output == "sigmoid"
        assert manifest["stages"]["int8"]["opset"] == {"given": 12, "quantized": 13}
    if kind == "stride4":
        assert io.resized


def test_torchs_default_export_with_external_weights_is_read_whole(blobs, tmp_path, capsys):
    """torch 2.13 writes model.onnx plus model.onnx.data; both are read, hashed and stored self-contained."""
    import torch

    def export(seed: int) -> None:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 2, 1)).eval()
        torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(tmp_path / "model.onnx"), external_data=True)

    export(0)
    model = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)  # as torch writes it
    argv = ["export", "--onnx", str(tmp_path / "model.onnx"), "--data", f"folder:{blobs}", "--mean", "0", "--std", "1",
            "--out", str(tmp_path / "export"), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    (stored,) = (tmp_path / "export").glob("model/*/model.onnx")
    assert not list(stored.parent.glob("*.data"))
    inside = onnx.load(str(stored), load_external_data=False)
    assert all(t.data_location != TensorProto.EXTERNAL for t in inside.graph.initializer)  # the weights are inside
    export(1)  # new weights in model.onnx.data; model.onnx itself may be byte-identical
    assert main(argv) == 0
    assert len(list((tmp_path / "export").glob("model/*/model.onnx"))) == 2  # new weights: a new artifact


def test_a_row_scores_the_runner_it_timed_not_the_parity_check(blobs, tmp_path, monkeypatch):
    """A runner whose outputs differ from ONNX Runtime's: the stored mIoU and drop follow that runner."""
    import segedge.flows.bench as bench
    from segedge.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeRunner

    class FlippingRunner(OnnxRuntimeRunner):
        def _infer(self, batch):
            out = super()._infer(batch)
            return out[:, ::-1].copy()  # swaps the two classes: every pixel wrong

    class FlippingBackend(OnnxRuntimeBackend):
        def runner(self, prepared, *, precision, threads, profile, manifest):
            return FlippingRunner(prepared, threads=threads)

    monkeypatch.setattr(bench, "get_backend", lambda name: FlippingBackend())
    onnx_path = stride4(tmp_path / "s.onnx")
    store = tmp_path / "r.sqlite"
    assert main(["bench", "--profile", "cpu", "--onnx", f"s={onnx_path}", "--data", f"folder:{blobs}", "--mean", "0",
                 "--std", "1", "--precisions", "fp32", "--quick", "--quiet", "--results", str(store),
                 "--out", str(tmp_path / "export")]) in (0, 1)
    with ResultsStore(store) as results:
        (row,) = results.rows()
    assert row["parity_agreement"] > 0.999 and abs(row["parity_drop"]) < 0.01  # the export's check: ORT, faithful
    assert row["argmax_agreement"] < 0.01  # the timed runner disagrees everywhere
    assert row["miou"] < 0.2 and row["miou_drop"] > 40 and row["status"] == "drop"


def test_a_budget_and_a_drop_limit_name_the_fastest_row_within_both():
    from segedge.flows.report import pick_fastest_within, summarize_pick

    def row(model, ms, drop, high):
        return dict(profile="cpu", machine_id="m", model=model, precision="int8", median_ms=ms, miou=0.5,
                    miou_drop=drop, drop_high=high, status="ok", batch=1)

    rows = [row("a", 10.0, 0.2, 1.5), row("b", 20.0, 0.1, 0.4), row("c", 30.0, 0.0, 0.1), row("d", 5.0, 3.0, 4.0)]
    assert pick_fastest_within(rows, 25.0, 0.5)["cpu"]["model"] == "b"  # a's interval reaches 1.5
    assert pick_fastest_within(rows, 8.0, 0.5)["cpu"] is None
    assert "nothing is within 0.5 points under 8" in summarize_pick(pick_fastest_within(rows, 8.0, 0.5), rows, 8.0, 0.5)


# the stride-4 resize and the one-channel paths, against numpy written here -----------------------------------

@pytest.mark.parametrize("src, dst", [((16, 16), (64, 64)), ((5, 7), (13, 29)), ((20, 18), (7, 9)), ((1, 3), (4, 4))])
def test_the_tests_bilinear_is_torchs_align_corners_false(src, dst):
    """The yardstick itself, against torch: the resize mmseg applies before scoring a lower-resolution head."""
    import torch

    x = np.random.default_rng(0).standard_normal((2, 3, *src)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(bilinear(x, dst), want, atol=1e-5)


@pytest.mark.parametrize("src, dst", [((16, 16), (64, 64)), ((5, 7), (13, 29)), ((20, 18), (7, 9))])
def test_a_lower_resolution_output_is_resized_as_mmseg_does(src, dst):
    from segedge.data.model_io import ModelIO

    x = np.random.default_rng(1).standard_normal((2, 3, *src)).astype(np.float32)
    got = ModelIO(resized=True).scores(x, dst)
    assert got.shape == (2, 3, *dst)
    np.testing.assert_allclose(got, bilinear(x, dst), atol=1e-5)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_one_logit_channel_is_foreground_where_its_probability_exceeds_the_threshold(threshold):
    from segedge.data.model_io import ModelIO

    logits = np.linspace(-3, 3, 2 * 1 * 8 * 16, dtype=np.float32).reshape(2, 1, 8, 16)  # probabilities 0.05..0.95
    classes = ModelIO(output="logit", threshold=threshold).scores(logits, (8, 16)).argmax(1)
    want = sigmoid(logits[:, 0].astype(np.float64)) > threshold
    np.testing.assert_array_equal(classes, want)
    assert 0.05 < want.mean() < 0.95  # both classes appear: the threshold decides something


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_one_sigmoid_channel_is_foreground_above_the_threshold(threshold):
    from segedge.data.model_io import ModelIO

    probabilities = np.linspace(0.01, 0.99, 2 * 8 * 16, dtype=np.float32).reshape(2, 1, 8, 16)
    classes = ModelIO(output="sigmoid", threshold=threshold).scores(probabilities, (8, 16)).argmax(1)
    np.testing.assert_array_equal(classes, probabilities[:, 0] > threshold)


def test_a_low_resolution_logit_is_resized_then_thresholded():
    """mmseg's order for a one-channel head: resize the logits to the label size, then sigmoid > threshold."""
    from segedge.data.model_io import ModelIO

    logits = np.random.default_rng(2).normal(0, 2, (1, 1, 16, 16)).astype(np.float32)
    classes = ModelIO(output="logit", threshold=0.3, resized=True).scores(logits, (64, 64)).argmax(1)
    np.testing.assert_array_equal(classes, sigmoid(bilinear(logits, (64, 64))[:, 0]) > 0.3)


def stride4_logit(path: Path) -> Path:
    """One raw logit channel at a quarter of the input's resolution: 10·(grey - 0.5) of 4×4 average-pooled pixels."""
    w = numpy_helper.from_array((10 * LUMA).reshape(1, 3, 1, 1), "w")
    b = numpy_helper.from_array(np.array([-5.0], np.float32), "b")
    nodes = [helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["pooled", "w", "b"], ["logit"])]
    return _save(nodes, [helper.make_tensor_value_info("image", F, [1, 3, SIZE, SIZE])],
                 [helper.make_tensor_value_info("logit", F, [1, 1, SIZE // 4, SIZE // 4])], [w, b], path, 13)


def test_a_stride4_logit_head_at_threshold_0_3_is_scored_as_mmseg_would(blobs, tmp_path, capsys):
    onnx_path = stride4_logit(tmp_path / "logit.onnx")
    store = tmp_path / "r.sqlite"
    code = main(["bench", "--profile", "cpu", "--onnx", f"logit={onnx_path}", "--data", f"folder:{blobs}",
                 "--mean", "0", "--std", "1", "--output", "logit", "--threshold", "0.3", "--precisions", "fp32",
                 "--quick", "--quiet", "--results", str(store), "--out", str(tmp_path / "export")])
    assert code == 0, capsys.readouterr().err
    with ResultsStore(store) as results:
        (row,) = results.rows()
    pairs = val_samples(blobs)

    def expected(threshold: float) -> float:
        scored = []
        for rgb, label in pairs:
            pooled = grey01(rgb).reshape(SIZE // 4, 4, SIZE // 4, 4).mean(axis=(1, 3))
            logit = bilinear((10 * (pooled - 0.5))[None, None], (SIZE, SIZE))[0, 0]
            scored.append((label, sigmoid(logit) > threshold))
        return miou(scored)

    want = expected(0.3)
    assert 0.3 < want < 0.98 and abs(want - expected(0.5)) > 0.01  # the threshold moves the figure
    assert row["miou"] == pytest.approx(want, abs=2e-3)
    assert row["reference_miou"] == pytest.approx(want, abs=2e-3)
    manifest = json.loads((Path(row["artifact"]).parent / "manifest.json").read_text())
    assert manifest["io"]["output"] == "logit" and manifest["io"]["threshold"] == 0.3 and manifest["io"]["resized"]

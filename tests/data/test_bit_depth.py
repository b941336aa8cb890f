"""Images deeper than 8 bits: every reader (datasets, eval, bench, predict) scales them to 8 bits by their range,
never clips. The PNGs are written here by hand (zlib + struct), the 8-bit expectations computed with numpy alone."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segedge.cli.main import main
from segedge.data.datasets import DatasetError, read_rgb

SIZE = 32


def png16(path: Path, samples: np.ndarray, significant_bits: int | None = None) -> Path:
    """A 16-bit PNG of uint16 ``samples`` (H×W grey or H×W×3 RGB), with an sBIT chunk declaring
    ``significant_bits`` when given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    colour_type = {1: 0, 3: 2}[channels]
    rows = samples.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if significant_bits is not None:
        body += chunk(b"sBIT", bytes([significant_bits] * channels))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def expected_8bit(samples: np.ndarray, maximum: int) -> np.ndarray:
    rgb = samples if samples.ndim == 3 else np.repeat(samples[..., None], 3, axis=2)
    return np.round(rgb.astype(np.float64) * 255.0 / maximum).astype(np.uint8)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    samples = np.random.default_rng(0).integers(0, 65536, (6, 7), dtype=np.uint16)
    samples[0, :3] = (0, 65535, 300)  # 300 is 1 at 8 bits; clipping would have made it 255
    image = read_rgb(png16(tmp_path / "g.png", samples))
    assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
    np.testing.assert_array_equal(image, expected_8bit(samples, 65535))


def test_a_16_bit_colour_png_is_rounded_by_its_whole_range(tmp_path):
    """Pillow keeps the high byte of 16-bit colour (v >> 8); the range's scaling rounds (v / 257)."""
    samples = np.random.default_rng(1).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    image = read_rgb(png16(tmp_path / "c.png", samples))
    want = expected_8bit(samples, 65535)
    assert (want != (samples >> 8)).any()  # the two differ on these samples
    np.testing.assert_array_equal(image, want)


def test_12_bit_in_16_reads_by_the_declared_depth_else_by_the_container(tmp_path):
    """A 12-bit camera image stored raw (0..4095) in a 16-bit PNG: with sBIT = 12 it is scaled by 4095; without a
    declaration it is scaled by 65535, the container's range, as every viewer shows it (dark)."""
    samples = np.random.default_rng(2).integers(0, 4096, (6, 7, 3), dtype=np.uint16)
    samples[0, 0] = (0, 4095, 2048)
    declared = read_rgb(png16(tmp_path / "declared.png", samples, significant_bits=12))
    np.testing.assert_array_equal(declared, expected_8bit(samples, 4095))
    assert declared[0, 0].tolist() == [0, 255, 128]
    undeclared = read_rgb(png16(tmp_path / "undeclared.png", samples))
    np.testing.assert_array_equal(undeclared, expected_8bit(samples, 65535))
    # PNG's own rule: samples scaled up to the container (left-shifted) read by 65535 whatever sBIT says
    shifted = read_rgb(png16(tmp_path / "shifted.png", samples << 4, significant_bits=12))
    np.testing.assert_array_equal(shifted, expected_8bit(samples << 4, 65535))


def test_a_mode_with_no_8_bit_reading_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.full((4, 5), -3.5, np.float32)).save(path)
    with pytest.raises(DatasetError) as error:
        read_rgb(path)
    message = str(error.value)
    assert "depth.tif" in message and "mode F" in message and "\n" not in message
    path = tmp_path / "count.tif"
    Image.fromarray(np.full((4, 5), -7, np.int32)).save(path)
    with pytest.raises(DatasetError, match=r"count\.tif .*mode I.*-7"):
        read_rgb(path)


# mIoU: the same pictures at 16 and at 8 bits score the same ----------------------------------------------

def luma_threshold(path: Path) -> Path:
    """A one-channel sigmoid on luma (bright = class 1), as binary segmentation nets ship."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    w = numpy_helper.from_array((10 * luma).reshape(1, 3, 1, 1), "w")
    b = numpy_helper.from_array(np.array([-5.0], np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["prob"])]
    graph = helper.make_graph(nodes, "theirs", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, SIZE, SIZE])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def blob_folders(root: Path) -> tuple[Path, Path]:
    """The same grey pictures twice: 8-bit PNGs, and 16-bit PNGs holding each value × 257 (its exact 16-bit form)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    folders = root / "eight", root / "sixteen"
    for folder in folders:
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        (folder / "splits").mkdir()
        (folder / "classes.txt").write_text("background\nblob\n")
        (folder / "splits" / "train.txt").write_text("t0\n")
        (folder / "splits" / "val.txt").write_text("".join(f"v{i}\n" for i in range(4)))
    for stem in ["t0"] + [f"v{i}" for i in range(4)]:
        cy, cx, r = rng.integers(8, SIZE - 8, 2).tolist() + [int(rng.integers(4, 9))]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        grey = np.clip(np.where(mask == 1, 170.0, 80.0) + rng.normal(0, 45, mask.shape), 0, 255).astype(np.uint8)
        for folder in folders:
            Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")
        Image.fromarray(grey).save(folders[0] / "images" / f"{stem}.png")
        png16(folders[1] / "images" / f"{stem}.png", grey.astype(np.uint16) * 257)
    return folders


def test_eval_scores_16_bit_images_as_their_8_bit_originals(tmp_path, capsys):
    model = luma_threshold(tmp_path / "m.onnx")
    scores = []
    for folder in blob_folders(tmp_path):
        assert main(["eval", "--onnx", str(model), "--data", f"folder:{folder}", "--mean", "0", "--std", "1",
                     "--images", "4", "--json", "--quiet", "--threads", "1"]) == 0
        scores.append(json.loads(capsys.readouterr().out)["mean_iou"])
    assert scores[0] > 0.5  # the model finds the blobs at 8 bits
    assert scores[1] == scores[0]

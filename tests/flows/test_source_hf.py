"""``--model hf:DIR``: a transformers ``save_pretrained`` directory as it comes, read offline, through export and
bench. Its class names, normalisation and size come from its own files; every figure a row stores is reproduced
here with transformers' model, numpy and torch's ``interpolate``, and the processor's conversion to segedge's 0–1
scale is checked against the processor itself."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from segedge.cli.main import main  # noqa: E402
from segedge.core.errors import CheckpointError, InputSizeError, SegedgeError  # noqa: E402
from segedge.core.results import ResultsStore  # noqa: E402
from segedge.flows.sources import SourceOptions  # noqa: E402
from segedge.flows.sources.hf import hf_source, image_processor, normalization, weight_files  # noqa: E402

SIZE = 64
NAMES = ("water", "sand", "boat")
MEAN, STD = (0.2, 0.6, 0.4), (0.4, 0.15, 0.3)  # the processor's, on purpose far from ImageNet's
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_segformer(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=len(NAMES),
        id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)})
    return transformers.SegformerForSemanticSegmentation(config).eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, shore) -> Path:
    """A tiny SegFormer as save_pretrained writes it, with the preprocessor_config.json its processor writes.
    Its classifier is a least-squares fit on the training images' random features (one forward pass, no
    training loop), so it segments the scenes well enough for a wrong normalisation to show in its mIoU."""
    model = tiny_segformer()
    images, labels = load_split(shore, "train")
    x = torch.from_numpy(normalised(images, MEAN, STD))
    features = []
    hook = model.decode_head.classifier.register_forward_pre_hook(lambda _, inputs: features.append(inputs[0]))
    with torch.no_grad():
        model(pixel_values=x)
    hook.remove()
    f = features[0].permute(0, 2, 3, 1).reshape(-1, features[0].shape[1])
    y = torch.from_numpy(labels[:, 2::4, 2::4].astype(np.int64)).reshape(-1)  # the labels at the features' 1/4
    solution = torch.linalg.lstsq(torch.cat([f, torch.ones(len(f), 1)], 1),
                                  torch.nn.functional.one_hot(y, len(NAMES)).float()).solution
    with torch.no_grad():
        model.decode_head.classifier.weight.copy_(solution[:-1].T[:, :, None, None])
        model.decode_head.classifier.bias.copy_(solution[-1])
    directory = tmp_path_factory.mktemp("hf") / "tiny-segformer"
    model.save_pretrained(directory)
    transformers.SegformerImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=list(MEAN),
                                         image_std=list(STD)).save_pretrained(directory)
    return directory


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    stems = (root / "splits" / f"{split}.txt").read_text().split()
    images = np.stack([np.asarray(Image.open(root / "images" / f"{s}.png").convert("RGB")) for s in stems])
    return images, np.stack([np.asarray(Image.open(root / "masks" / f"{s}.png")) for s in stems])


def normalised(images: np.ndarray, mean, std) -> np.ndarray:
    x = (images.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def shore(tmp_path_factory) -> Path:
    """A folder dataset labelled with the model's classes: water above a wavy shore, sand below, a red boat."""
    root = tmp_path_factory.mktemp("shore")
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    colours = np.array([[40, 90, 170], [200, 180, 120], [170, 40, 40]], float)
    stems = []
    for i in range(12):
        mask = (yy > SIZE // 2 + 6 * np.sin(xx / 7 + rng.uniform(0, 6)) + rng.integers(-8, 8)).astype(np.uint8)
        cy, cx, r = int(rng.integers(12, 30)), int(rng.integers(12, 52)), int(rng.integers(5, 10))
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
        rgb = np.clip(colours[mask] + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i:02d}.png")
        stems.append(f"s{i:02d}")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    (root / "splits" / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[8:]) + "\n")
    return root


def expected_miou(hf_dir: Path, root: Path, mean, std) -> float:
    """transformers' model on the val images, normalised in numpy, logits resized by torch's bilinear
    (align_corners=False) to the labels, argmax, IoU summed over the images in numpy (classes seen only)."""
    model = transformers.AutoModelForSemanticSegmentation.from_pretrained(hf_dir, local_files_only=True).eval()
    images, labels = load_split(root, "val")
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(normalised(images, mean, std))).logits
        predicted = torch.nn.functional.interpolate(logits, size=labels.shape[1:], mode="bilinear",
                                                    align_corners=False).argmax(1).numpy()
    inter, union = np.zeros(len(NAMES)), np.zeros(len(NAMES))
    for c in range(len(NAMES)):
        inter[c] = np.logical_and(labels == c, predicted == c).sum()
        union[c] = np.logical_or(labels == c, predicted == c).sum()
    return float((inter[union > 0] / union[union > 0]).mean())


# the chain ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """One artifact store for export and bench: bench reuses what export built when the two agree."""
    return tmp_path_factory.mktemp("export")


def test_export_takes_classes_normalisation_and_size_from_the_directory(hf_dir, shore, artifacts, capsys):
    code = main(["export", "--model", f"hf:{hf_dir}", "--int8", "--calib-images", "4", "--data", f"folder:{shore}",
                 "--out", str(artifacts)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "Loading weights" not in err  # transformers' bar stays off the CLI
    (manifest_path,) = artifacts.glob("tiny-segformer/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["model"] == "tiny-segformer"  # the directory's name
    assert manifest["class_names"] == list(NAMES)  # config.json's id2label, ordered by id
    assert manifest["normalization"]["mean"] == pytest.approx(MEAN)  # the processor's, not ImageNet's
    assert manifest["normalization"]["std"] == pytest.approx(STD)
    assert manifest["config"]["input_size"] == [SIZE, SIZE]  # the processor's size: no --input-size given
    assert manifest["torch_output"] == {"returns": "SemanticSegmenterOutput", "scores": "logits", "stride": 4}
    assert {"onnx", "sim", "int8"} <= set(manifest["stages"])
    assert manifest["stages"]["int8"]["parity"]["argmax_agreement"] > 0.9


def test_bench_rows_score_the_model_as_transformers_runs_it(hf_dir, shore, artifacts, tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    code = main(["bench", "--profile", "cpu", "--precisions", "fp32,int8", "--quick", "--quiet", "--model",
                 f"hf:{hf_dir}", "--data", f"folder:{shore}", "--input-size", f"{SIZE}x{SIZE}", "--calib-images", "4",
                 "--results", str(store), "--out", str(artifacts)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    with ResultsStore(store) as results:
        rows = {r["precision"]: r for r in results.rows()}
    assert set(rows) == {"fp32", "int8"} and {r["model"] for r in rows.values()} == {"tiny-segformer"}
    assert all(r["status"] != "failed" for r in rows.values())
    manifest = json.loads((Path(rows["int8"]["artifact"]).parent / "manifest.json").read_text())
    assert manifest["class_names"] == list(NAMES)
    assert all(json.loads(r["classes"]) == list(NAMES) for r in rows.values())  # what the report names them by
    from segedge.flows.html_report import build_html

    assert f"<dd>{', '.join(NAMES)}</dd>" in build_html(list(rows.values()))  # the HF class names in the report

    want = expected_miou(hf_dir, shore, MEAN, STD)
    assert 0.5 < want < 0.98  # a figure that can fail: neither trivial nor perfect
    assert want != pytest.approx(expected_miou(hf_dir, shore, IMAGENET_MEAN, IMAGENET_STD), abs=2e-3)  # can fail
    assert rows["fp32"]["eval_images"] == 4
    assert rows["fp32"]["reference_miou"] == pytest.approx(want, abs=2e-3)
    assert rows["fp32"]["miou"] == pytest.approx(want, abs=2e-3)


# what the directory says -------------------------------------------------------------------------------------

PROCESSORS = {  # how processors feed a model, each to be reproduced as (x - mean) / std on 0–1 RGB
    "0-255 pixels": lambda: transformers.SegformerImageProcessor(
        do_rescale=False, image_mean=[123.675, 116.28, 103.53], image_std=[58.395, 57.12, 57.375]),
    "-1..1": lambda: transformers.SegformerImageProcessor(rescale_factor=1 / 127.5, image_mean=[1, 1, 1],
                                                         image_std=[1, 1, 1]),
    "no normalisation": lambda: transformers.SegformerImageProcessor(do_normalize=False),
    "BGR, mean saved but not applied": lambda: transformers.MobileViTImageProcessor(),
    "DPT": lambda: transformers.DPTImageProcessor(),
}


@pytest.mark.parametrize("kind", sorted(PROCESSORS))
def test_a_processors_normalisation_becomes_segedges_0_1_mean_and_std(kind, tmp_path):
    from segedge.data.model_io import ModelIO

    PROCESSORS[kind]().save_pretrained(tmp_path)
    processor = image_processor(transformers, tmp_path, SourceOptions(), "hf:test")
    mean, std, flip = normalization(processor, "hf:test")
    image = np.random.default_rng(1).integers(0, 256, (24, 40, 3)).astype(np.uint8)
    fed = ModelIO().feed(image, mean, std)
    fed = fed[:, ::-1] if flip else fed
    want = transformers.AutoImageProcessor.from_pretrained(tmp_path, local_files_only=True)(
        images=image, do_resize=False, do_center_crop=False, return_tensors="np")["pixel_values"]
    assert np.abs(fed - want).max() < 1e-5
    assert flip == (kind == "BGR, mean saved but not applied")


def test_a_bgr_model_is_fed_rgb_with_its_flip_inside_the_graph(tmp_path):
    """MobileViT's processor flips RGB to BGR: the source, fed as segedge feeds, gives transformers' logits."""
    torch.manual_seed(0)
    config = transformers.MobileViTConfig(image_size=SIZE, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
                                          aspp_out_channels=16, atrous_rates=[6, 12, 18], num_labels=2,
                                          id2label={0: "ground", 1: "object"}, label2id={"ground": 0, "object": 1})
    model = transformers.MobileViTForSemanticSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    processor = transformers.MobileViTImageProcessor(crop_size={"height": SIZE, "width": SIZE})
    processor.save_pretrained(tmp_path)
    source = hf_source(str(tmp_path), SourceOptions())
    assert source.spec.default_input_size == (SIZE, SIZE) and source.class_names == ("ground", "object")
    assert source.extra["channel_order"].startswith("BGR")
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    with torch.no_grad():
        got = source.module(torch.from_numpy(source.io.feed(image, source.spec.mean, source.spec.std)))
        want = model(pixel_values=torch.from_numpy(processor(images=image, return_tensors="np")["pixel_values"])).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_sharded_weights_are_read_and_hashed_with_the_config(hf_dir, tmp_path):
    sharded = tmp_path / "sharded"
    tiny_segformer(seed=1).save_pretrained(sharded, max_shard_size="20KB")
    shutil.copy(hf_dir / "preprocessor_config.json", sharded)
    files = weight_files(sharded, "hf:x")
    assert files[0].name == "model.safetensors.index.json" and len(files) > 2
    source = hf_source(str(sharded), SourceOptions())
    assert source.class_names == NAMES and source.extra["library"] == "transformers"
    assert source.extra["version"] == transformers.__version__ and source.code_id
    other = hf_source(str(hf_dir), SourceOptions())
    assert source.weights_id != other.weights_id  # other weights, another artifact
    assert hf_source(str(hf_dir), SourceOptions()).weights_id == other.weights_id


# refusals, each one line -------------------------------------------------------------------------------------

def test_a_missing_directory_is_one_line_on_the_cli(tmp_path, capsys):
    code = main(["export", "--model", f"hf:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "export")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "no directory" in err and "nowhere" in err


def _copy(hf_dir: Path, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(hf_dir, target)
    for name in drop:
        (target / name).unlink()
    return target


def test_a_folder_without_config_or_weights_is_refused_by_name(hf_dir, tmp_path):
    with pytest.raises(SegedgeError, match="has no config.json; give the folder save_pretrained wrote"):
        hf_source(str(tmp_path), SourceOptions())
    with pytest.raises(CheckpointError, match=r"has config.json but no weights \(model.safetensors or pytorch_model.bin\)"):
        hf_source(str(_copy(hf_dir, tmp_path, drop=("model.safetensors",))), SourceOptions())


def test_a_model_of_another_task_is_refused_before_its_weights_are_read(tmp_path):
    config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                     intermediate_size=8)
    transformers.BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(SegedgeError, match=r"is a BertModel \('bert'\), not a semantic-segmentation model; .*segformer"):
        hf_source(str(tmp_path), SourceOptions())


def test_a_backbone_checkpoint_under_a_new_head_is_refused(tmp_path):
    transformers.SegformerModel(tiny_segformer().config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="weights lack .* of the model's tensors .*decode_head"):
        hf_source(str(tmp_path), SourceOptions(input_size=(SIZE, SIZE)))


def test_without_transformers_the_error_names_the_extra(hf_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SegedgeError, match=r"needs transformers .*pip install 'segedge\[hf\]'"):
        hf_source(str(hf_dir), SourceOptions())


def test_sizes_and_class_counts_the_model_cannot_take_are_refused(hf_dir, tmp_path):
    with pytest.raises(InputSizeError, match="scores at 1/4 of the input: try --input-size 64x64"):
        hf_source(str(hf_dir), SourceOptions(input_size=(62, 62)))
    with pytest.raises(SegedgeError, match=r"has 3 classes \(config.json id2label\) but --num-classes says 5"):
        hf_source(str(hf_dir), SourceOptions(num_classes=5))
    with pytest.raises(InputSizeError, match="has no preprocessor_config.json with an image size: give --input-size"):
        hf_source(str(_copy(hf_dir, tmp_path, drop=("preprocessor_config.json",))), SourceOptions())
    with pytest.raises(CheckpointError, match="loads its weights from the directory; --checkpoint is for"):
        hf_source(str(hf_dir), SourceOptions(checkpoint=tmp_path / "w.pt"))

import numpy as np
import pytest

from segedge.models.checkpoint import load_checkpoint
from segedge.data.synthetic import CLASS_NAMES, SyntheticScenes
from segedge.core.errors import CheckpointError, InputSizeError
from segedge.models.registry import get_spec
from segedge.train.loop import TrainConfig, evaluate_torch


def test_training_beats_untrained_weights(tiny_checkpoint):
    import torch

    info = tiny_checkpoint.train_info
    spec = get_spec("unet")
    images, masks = SyntheticScenes("val", 4, size=(64, 128)).batch(0, 4)
    torch.manual_seed(0)
    untrained = spec.build(num_classes=len(CLASS_NAMES), width=0.125)
    before = evaluate_torch(untrained, spec, images, masks, len(CLASS_NAMES)).mean_iou
    after = evaluate_torch(tiny_checkpoint.build(), spec, images, masks, len(CLASS_NAMES)).mean_iou
    assert after == pytest.approx(info["val_miou"])
    assert after > before + 0.05, (before, after)


def test_checkpoint_carries_spec_and_class_names(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint.path)
    assert ckpt.model == "unet" and ckpt.width == 0.125
    assert ckpt.class_names == CLASS_NAMES
    assert ckpt.train_info["config"]["iterations"] == 60


def test_checkpoint_for_another_architecture_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="holds a unet model, but --model asks for bisenet"):
        load_checkpoint(tiny_checkpoint.path, expect_model="bisenet")


def test_checkpoint_with_wrong_class_count_is_refused(tiny_checkpoint, tmp_path):
    import torch

    payload = torch.load(tiny_checkpoint.path, weights_only=True)
    payload["num_classes"] = 3
    payload["class_names"] = ["a", "b", "c"]
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"does not match unet \(width 0.125, 3 classes\).*shape mismatches"):
        load_checkpoint(bad).build()


@pytest.mark.parametrize("content, message", [(b"garbage", "unreadable or corrupt"), (None, "is not a segedge checkpoint")])
def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path, content, message):
    import torch

    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_train_config_validates_sizes():
    with pytest.raises(InputSizeError, match="not a multiple of 16"):
        TrainConfig(model="unet", crop=(72, 64), scene_size=(96, 128)).validate()
    with pytest.raises(InputSizeError, match="larger than the scene"):
        TrainConfig(model="unet", crop=(128, 128), scene_size=(64, 128)).validate()


def test_cache_key_ignores_threads_but_not_recipe():
    a = TrainConfig(model="unet", threads=1).cache_key()
    assert a == TrainConfig(model="unet", threads=2).cache_key()
    assert a != TrainConfig(model="unet", iterations=5).cache_key()


QUICK = dict(model="unet", width=0.125, iterations=6, batch_size=2, scene_size=(64, 128), crop=(64, 64),
             train_scenes=6, val_images=2, threads=1)


def test_same_seed_same_weights_and_resume_equals_straight_training(tmp_path, monkeypatch):
    import torch

    import segedge.train.loop as train_module
    from segedge.train.loop import state_path, train

    straight = train(TrainConfig(**QUICK, eval_every=3), out=tmp_path / "a.pt", progress=False)
    again = train(TrainConfig(**QUICK, eval_every=3), out=tmp_path / "b.pt", progress=False)
    for k, v in straight.state_dict.items():
        assert torch.equal(v, again.state_dict[k]), k
    # a run killed after its iteration-3 evaluation, then resumed, matches the straight run
    real_evaluate, calls = train_module.evaluate_torch, []

    def evaluate_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_torch", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**QUICK, eval_every=3), out=tmp_path / "c.pt", progress=False)
    monkeypatch.setattr(train_module, "evaluate_torch", real_evaluate)
    assert not (tmp_path / "c.pt").exists() and state_path(tmp_path / "c.pt").exists()
    resumed = train(TrainConfig(**QUICK, eval_every=3), out=tmp_path / "c.pt", progress=False, resume=state_path(tmp_path / "c.pt"))
    assert resumed.train_info["history"][-1]["iteration"] == 6
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # the checkpoint holds the best iteration's weights, which could be iteration 3's (restored from the state
    # either way): the last iteration's weights, kept in the training state, are what resuming must reproduce
    last = [torch.load(state_path(tmp_path / f), map_location="cpu", weights_only=False) for f in ("a.pt", "c.pt")]
    assert last[0]["iteration"] == last[1]["iteration"] == 6
    for k, v in last[0]["model"].items():
        assert torch.equal(v, last[1]["model"][k]), k
    assert [h["miou"] for h in last[0]["history"]] == [h["miou"] for h in last[1]["history"]]


def test_resume_refuses_a_changed_recipe(tmp_path):
    from segedge.train.loop import state_path, train

    train(TrainConfig(**{**QUICK, "iterations": 2}), out=tmp_path / "c.pt", progress=False)
    with pytest.raises(CheckpointError, match=r"recipe changed \(lr\)"):
        train(TrainConfig(**{**QUICK, "lr": 0.5}), out=tmp_path / "c.pt", progress=False, resume=state_path(tmp_path / "c.pt"))


@pytest.mark.parametrize("loss", ["ce", "dice", "focal:gamma=2", "tversky:alpha=0.3,beta=0.7", "lovasz", "0.5*ce+1.0*dice"])
def test_every_loss_trains_from_the_cli(tmp_path, loss, capsys):
    from segedge.cli.main import main

    code = main(["train", "--model", "unet", "--width", "0.125", "--iterations", "2", "--batch-size", "2",
                 "--scene-size", "64x128", "--crop", "64x64", "--train-scenes", "2", "--val-images", "1",
                 "--loss", loss, "--scale-range", "0.75,1.25", "--jitter", "0.2", "--schedule", "cosine",
                 "--out", str(tmp_path / "m.pt"), "--quiet", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "m.pt").train_info["config"]["loss"] == loss


def test_unknown_loss_is_a_one_line_error(capsys):
    from segedge.cli.main import main

    assert main(["train", "--model", "unet", "--loss", "dise"]) == 1
    err = capsys.readouterr().err
    assert "dise" in err and "ce" in err and len(err.strip().splitlines()) == 1


def test_default_synthetic_recipe_is_the_quick_one_and_has_its_own_cache_key():
    recipe = TrainConfig(model="bisenet").recipe()
    quick = dict(iterations=120, batch_size=4, crop=(192, 192), train_scenes=40, scene_size=(512, 1024), lr=2.5e-4,
                 loss="ce", optimizer="adamw", schedule="poly", val_images=8, seed=0)
    assert {k: recipe[k] for k in quick} == quick
    # the default before issue 18 (400 iterations, batch 8, 160 scenes, lr 2e-3) cached its weights under this key:
    # the new default never reads them, and these flags still find them
    old = TrainConfig(model="bisenet", iterations=400, batch_size=8, train_scenes=160, lr=2e-3, crop=(256, 256))
    assert old.cache_key() == "bisenet-d3f6517fcfe8" != TrainConfig(model="bisenet").cache_key()


def test_the_checkpoint_records_the_default_recipe(tmp_path):
    from segedge.train.loop import train

    sizes = {k: QUICK[k] for k in ("model", "width", "scene_size", "crop", "val_images", "threads")}
    ckpt = train(TrainConfig(**sizes, iterations=2, train_scenes=2), out=tmp_path / "m.pt", progress=False)
    recorded = load_checkpoint(ckpt.path).train_info["config"]
    assert (recorded["iterations"], recorded["batch_size"], recorded["lr"], recorded["loss"]) == (2, 4, 2.5e-4, "ce")
    assert "threads" not in recorded


def test_progress_shows_only_known_figures_and_says_what_a_pause_is(tmp_path, capsys):
    from segedge.train.loop import train

    train(TrainConfig(**QUICK, eval_every=3), out=tmp_path / "p.pt", progress=True)
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").split("\n") if f.strip()]
    assert "nan" not in err.lower()
    assert any("rendering 6 synthetic training scenes (64x128)" in f for f in frames)
    evaluating = [f for f in frames if f.startswith("train unet") and "evaluating on 2 val images" in f]
    assert evaluating, frames
    # the first evaluation's frame shows the loss and no mIoU (none is known yet); the last frame shows both
    assert "loss=" in evaluating[0] and "mIoU" not in evaluating[0], evaluating[0]
    last = [f for f in frames if f.startswith("train unet")][-1]
    assert "loss=" in last and "mIoU=" in last and "evaluating" not in last, last


def _folder(root, size=(224, 192), images=6):
    """A medical-like set at 224x192: a bright disc on a dark field, 2 classes, no split lists."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    for i in range(images):
        mask = ((yy - rng.integers(60, 160)) ** 2 + (xx - rng.integers(60, 130)) ** 2 < 40 ** 2).astype(np.uint8)
        grey = np.where(mask, 180, 60) + rng.normal(0, 20, size)
        Image.fromarray(np.clip(np.stack([grey] * 3, -1), 0, 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    (root / "classes.txt").write_text("background\ncell\n")
    return root


def test_the_default_crop_follows_the_datas_size_and_the_checkpoint_runs_at_it(tmp_path, capsys):
    """A 224x192 set used to fail: "crop (256, 256) is larger than the scene size (224, 192)"; then its checkpoint
    was exported at the model's 512x1024 with a warning. Now the crop follows the data, said once, and export and
    bench run the checkpoint at its training size unless --input-size says otherwise."""
    import json

    from segedge.cli.main import main
    from segedge.core.results import ResultsStore

    data = _folder(tmp_path / "cells")
    ckpt = tmp_path / "cells.pt"
    assert main(["train", "--model", "unet", "--width", "0.125", "--iterations", "2", "--batch-size", "2",
                 "--val-images", "1", "--threads", "1", "--data", f"folder:{data}", "--out", str(ckpt), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "training crops of 224x192" in err
    assert tuple(load_checkpoint(ckpt).train_info["config"]["crop"]) == (224, 192)
    assert main(["export", "--model", "unet", "--checkpoint", str(ckpt), "--data", f"folder:{data}", "--eval-images",
                 "1", "--threads", "1", "--out", str(tmp_path / "export"), "--quiet"]) == 0
    manifest = json.loads(next((tmp_path / "export").glob("unet/*/manifest.json")).read_text())
    assert manifest["config"]["input_size"] == [224, 192]
    assert main(["bench", "--profile", "cpu", "--models", "unet", "--checkpoint", f"unet={ckpt}", "--precisions",
                 "fp32", "--quick", "--data", f"folder:{data}", "--results", str(tmp_path / "r.sqlite"),
                 "--out", str(tmp_path / "export"), "--quiet"]) == 0
    with ResultsStore(tmp_path / "r.sqlite") as store:
        (row,) = store.rows()
    assert (row["height"], row["width"]) == (224, 192) and row["status"] != "failed"


def test_a_given_crop_larger_than_the_scene_is_still_refused():
    with pytest.raises(InputSizeError, match="larger than the scene size"):
        TrainConfig(model="unet", crop=(256, 256), scene_size=(224, 192)).validate()
    assert TrainConfig(model="unet", scene_size=(224, 192)).crop == (224, 192)
    assert TrainConfig(model="bisenet").crop == (192, 192)  # the synthetic quick recipe's crop (issue 31)
    assert TrainConfig(model="unet", data="folder:/x", scene_size=(512, 512)).crop == (256, 256)  # real data's

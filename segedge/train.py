"""A minimal trainer on the built-in synthetic scenes, so every figure segedge reports comes from a
trained network (argmax agreement and mIoU drop are meaningless on random weights).

Cross-entropy with ignore index, AdamW or SGD, poly learning-rate schedule, random crop and flip. Crops are
taken at the evaluation scale from full-size scenes, so what the model learns is what it is judged on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from segedge.artifacts import config_hash
from segedge.checkpoint import Checkpoint, cache_dir, load_checkpoint, save_checkpoint
from segedge.data.synthetic import CLASS_NAMES, IGNORE_INDEX, SyntheticScenes
from segedge.data.transforms import random_crop_flip, to_network_input
from segedge.errors import InputSizeError
from segedge.metrics import ConfusionMatrix, SegmentationScores
from segedge.registry import get_spec

AUX_WEIGHT = 0.4  # BiSeNet's auxiliary-loss weight; applies to any model returning (main, *aux) in training


@dataclass(frozen=True)
class TrainConfig:
    model: str
    width: float = 1.0
    iterations: int = 400
    batch_size: int = 8
    scene_size: tuple[int, int] = (512, 1024)
    crop: tuple[int, int] = (256, 256)
    train_scenes: int = 160
    val_images: int = 8
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = None

    def validate(self) -> None:
        spec = get_spec(self.model)
        if self.optimizer not in ("adamw", "sgd"):
            raise InputSizeError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        for name in ("iterations", "batch_size", "train_scenes", "val_images"):
            if getattr(self, name) < 1:
                raise InputSizeError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < spec.min_train_batch:
            raise InputSizeError(
                f"batch-size must be >= {spec.min_train_batch} for {spec.name}: BatchNorm on its pooled 1x1 maps "
                "needs several samples per step"
            )
        spec.check_input_size(*self.crop)
        spec.check_input_size(*self.scene_size)
        if self.crop[0] > self.scene_size[0] or self.crop[1] > self.scene_size[1]:
            raise InputSizeError(f"crop {self.crop} is larger than the scene size {self.scene_size}")

    def cache_key(self) -> str:
        recipe = asdict(self)
        recipe.pop("threads")  # thread count changes speed, not weights
        return f"{get_spec(self.model).name}-{config_hash(recipe)}"


def cached_checkpoint_path(config: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.cache_key()}.pt"


def evaluate_torch(module, spec, images: np.ndarray, masks: np.ndarray, num_classes: int, batch: int = 2) -> SegmentationScores:
    """mIoU of a torch module on uint8 images / masks (the FP32 reference's score)."""
    import torch

    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(to_network_input(images[start : start + batch], spec.mean, spec.std))
            logits = module(x)
            cm.update(masks[start : start + batch], logits.argmax(1).numpy())
    return cm.scores()


def train(config: TrainConfig, out: str | Path | None = None, progress: bool = True) -> Checkpoint:
    """Train on synthetic scenes and save a checkpoint (to ``out`` or the cache); returns it loaded."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    config.validate()
    spec = get_spec(config.model)
    num_classes = len(CLASS_NAMES)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    started = time.perf_counter()
    scenes = SyntheticScenes("train", config.train_scenes, size=config.scene_size, seed=config.seed)
    pool_images, pool_masks = scenes.batch(0, config.train_scenes)

    model = spec.build(num_classes=num_classes, width=config.width).train()
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    poly = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / config.iterations) ** 0.9)

    bar = tqdm(range(config.iterations), desc=f"train {spec.name}", disable=not progress, unit="it")
    for _ in bar:
        picks = rng.integers(0, config.train_scenes, size=config.batch_size)
        crops = [random_crop_flip(pool_images[i], pool_masks[i], config.crop, rng) for i in picks]
        x = torch.from_numpy(to_network_input(np.stack([c[0] for c in crops]), spec.mean, spec.std))
        y = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64))
        outputs = model(x)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        loss = F.cross_entropy(outputs[0], y, ignore_index=IGNORE_INDEX)
        for aux in outputs[1:]:
            loss = loss + AUX_WEIGHT * F.cross_entropy(aux, y, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        poly.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - started

    val = SyntheticScenes("val", config.val_images, size=config.scene_size, seed=config.seed)
    val_images, val_masks = val.batch(0, config.val_images)
    scores = evaluate_torch(model, spec, val_images, val_masks, num_classes)
    info = {
        "config": {k: v for k, v in asdict(config).items() if k != "threads"},
        "seconds": round(train_seconds, 1),
        "val_miou": scores.mean_iou,
        "val_pixel_accuracy": scores.pixel_accuracy,
        "val_images": config.val_images,
        "torch_threads": torch.get_num_threads(),
    }
    path = Path(out) if out else cached_checkpoint_path(config)
    save_checkpoint(path, model.eval(), spec.name, config.width, CLASS_NAMES, info)
    return load_checkpoint(path)


def trained_checkpoint(config: TrainConfig, progress: bool = True) -> Checkpoint:
    """The cached checkpoint for this recipe, training it first if the cache lacks it."""
    path = cached_checkpoint_path(config)
    if path.is_file():
        return load_checkpoint(path, expect_model=config.model)
    return train(config, progress=progress)

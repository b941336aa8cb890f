"""The trainer: every figure segedge reports comes from a trained network (argmax agreement and mIoU drop
are meaningless on random weights), trained here on the built-in synthetic scenes or a real dataset.

Any loss of :mod:`segedge.train.losses` (``--loss ce+dice``), AdamW or SGD, poly / cosine / plateau schedules,
auxiliary heads (a model returning ``(main, *aux)`` in training mode gets ``AUX_WEIGHT`` × loss on each),
random scale, crop, flip and colour jitter, evaluation every N iterations keeping the best weights, resume
from a training state, and a seed that makes a run reproducible on the same machine.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from segedge.core.artifacts import atomic_path, config_hash
from segedge.models.checkpoint import Checkpoint, cache_dir, load_checkpoint, save_checkpoint
from segedge.data.synthetic import IGNORE_INDEX, SyntheticScenes
from segedge.data.transforms import colour_jitter, random_scale_crop_flip, to_network_input
from segedge.core.errors import CheckpointError, InputSizeError, SegedgeError
from segedge.core.metrics import ConfusionMatrix, SegmentationScores
from segedge.models.registry import get_spec

SYNTHETIC_SCENE_SIZE = (512, 1024)
AUX_WEIGHT = 0.4  # BiSeNet's auxiliary-loss weight; applies to any model returning (main, *aux) in training
SCHEDULES = ("poly", "cosine", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: every field but ``threads`` is recorded in the checkpoint and keys the weight cache.

    The defaults are the zoo's quick synthetic recipe (issue 18). The README's first command trains it before it
    shows anything, so it must fit a first result within 5 minutes on 2 cores, installs and export included.
    Nearly all of training is optimizer steps (rendering 40 scenes at 512x1024 takes ~6 s, the final evaluation
    ~5 s), so the budget is about a fifth of the crops of the earlier default (400 steps of batch 8 from 160
    scenes at lr 2e-3: ~600 s, BiSeNet v1 val mIoU 30.9). Spent as 160 steps of batch 4 at AdamW lr 2.5e-4,
    BiSeNet v1 reaches 28.0 with 1 thread, 24.3 with 2 (so short a run feels the summation order); with 1 thread
    and at the same cost, 80 steps of batch 8 reached 20.8 (lr 5e-4), and lr 2e-3 / 1e-3 / 5e-4 reached
    20.8 / 23.6 / 24.8 (seed 0). The earlier default is ``--iterations 400 --batch-size 8 --train-scenes 160
    --lr 2e-3``. Issue 31 cut it again for the slowest CPU met (an AVX2-only EPYC, 1.85 s a step at 256x256):
    120 steps of 192x192 crops (BiSeNet v1: 23.3 in 104 s on an AVX-512 Xeon, against 25.0 in ~180 s).
    """

    model: str
    width: float = 1.0
    iterations: int = 120
    batch_size: int = 4
    # HxW the scenes are rendered or resized to. None: 512x1024 for synthetic scenes, the data's own size (its
    # first training image, rounded to the model's stride) for a real dataset; recorded in the checkpoint
    scene_size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None  # None: 192x192 on synthetic scenes, 256x256 on real data, capped at the
    # scene size (a 224x192 dataset crops 224x192)
    train_scenes: int = 40  # synthetic scenes rendered once and cropped from (real data: the whole split)
    val_images: int = 8
    data: str = "synthetic"  # or KIND:ROOT, e.g. cityscapes:/data/cityscapes (see segedge.data.open_dataset)
    loss: str = "ce"
    optimizer: str = "adamw"
    schedule: str = "poly"
    lr: float = 2.5e-4
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (1.0, 1.0)
    jitter: float = 0.0
    eval_every: int = 0  # 0: evaluate once at the end
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.scene_size is None and self.data == "synthetic":
            object.__setattr__(self, "scene_size", SYNTHETIC_SCENE_SIZE)  # the cache keys of earlier recipes
        if self.crop is None and self.scene_size is not None:
            quick = self.data == "synthetic" and tuple(self.scene_size) == SYNTHETIC_SCENE_SIZE  # the default scenes
            crop = SYNTHETIC_CROP if quick else DEFAULT_CROP
            object.__setattr__(self, "crop", default_crop(self.model, self.scene_size, crop))

    def validate(self) -> None:
        spec = get_spec(self.model)
        if self.optimizer not in ("adamw", "sgd"):
            raise InputSizeError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise InputSizeError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("iterations", "batch_size", "train_scenes", "val_images"):
            if getattr(self, name) < 1:
                raise InputSizeError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < spec.min_train_batch:
            raise InputSizeError(
                f"batch-size must be >= {spec.min_train_batch} for {spec.name}: BatchNorm on its pooled 1x1 maps "
                "needs several samples per step"
            )
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise InputSizeError(f"scale range must be 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.jitter < 1:
            raise InputSizeError(f"jitter must be within [0, 1), got {self.jitter}")
        if self.eval_every < 0:
            raise InputSizeError(f"eval-every must be >= 0, got {self.eval_every}")
        if self.crop is None or self.scene_size is None:
            return  # the data's size (and the crop that follows it), resolved and checked when the data is opened
        spec.check_input_size(*self.crop)
        spec.check_input_size(*self.scene_size)
        if self.crop[0] > self.scene_size[0] or self.crop[1] > self.scene_size[1]:
            raise InputSizeError(f"crop {self.crop} is larger than the scene size {self.scene_size}")

    def recipe(self) -> dict:
        recipe = asdict(self)
        recipe.pop("threads")  # thread count changes speed, not weights
        return recipe

    def cache_key(self) -> str:
        return f"{get_spec(self.model).name}-{config_hash(self.recipe())}"


def cached_checkpoint_path(config: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.cache_key()}.pt"


def state_path(checkpoint: Path) -> Path:
    """Optimizer, schedule, iteration and RNG state beside a checkpoint, for ``--resume``."""
    return checkpoint.with_suffix(".state.pt")


DEFAULT_CROP = (256, 256)  # real data
# the synthetic quick recipe (issue 31): 192x192 crops and 120 steps train BiSeNet v1 to val mIoU 23.3 in 104 s,
# against 25.0 in ~180 s for 256x256 and 160 steps (160x160: 19.8 in 93 s; a step's fixed cost dominates below)
SYNTHETIC_CROP = (192, 192)


def default_crop(model: str, scene_size: tuple[int, int], crop: tuple[int, int] = DEFAULT_CROP) -> tuple[int, int]:
    """``crop`` (256x256 for real data), or the scene's own size where it is smaller, rounded down to what the
    model takes: the default crop follows the data (a 224x192 medical set trains on 224x192 crops, not on a
    refusal)."""
    spec = get_spec(model)
    multiple = spec.size_multiple
    return tuple(max(min(c, s) // multiple * multiple, minimum, multiple)
                 for c, s, minimum in zip(crop, scene_size, spec.min_input_size))


def with_data_size(config: TrainConfig, log=lambda _: None) -> TrainConfig:
    """``config`` with ``scene_size`` resolved: a real dataset trains at its own size (the first training
    image's, rounded to the model's stride) rather than being resized to 512x1024 without a word; and the crop,
    when not given, follows that size (said once)."""
    from dataclasses import replace

    if config.scene_size is not None:
        return config  # its crop, when not given, was capped at the scene size when the config was made

    from segedge.data.datasets import train_and_val

    kind, sep, root = config.data.partition(":")
    if not sep or not root:
        raise SegedgeError(f"--data takes synthetic or KIND:ROOT (e.g. cityscapes:/data/cityscapes), got {config.data!r}")
    train_set, _, _ = train_and_val(kind, root)
    if len(train_set) == 0:
        raise SegedgeError(f"{config.data} has no training images")
    height, width = train_set[0][0].shape[:2]
    size = get_spec(config.model).nearest_valid_size(height, width)
    log(f"training at {size[0]}x{size[1]}: the size of {config.data}'s images ({height}x{width}), rounded to what "
        f"{config.model} takes (--scene-size to choose another)")
    resolved = replace(config, scene_size=size)  # and, when not given, the crop capped at that size
    if config.crop is None:
        log(f"training crops of {resolved.crop[0]}x{resolved.crop[1]} (256x256 capped at the data's size; --crop to "
            f"choose another)")
    return resolved


def open_splits(config: TrainConfig, log=lambda _: None):
    """(train dataset, val dataset, class names) for ``config.data``."""
    if config.data == "synthetic":
        train = SyntheticScenes("train", config.train_scenes, size=config.scene_size, seed=config.seed)
        val = SyntheticScenes("val", config.val_images, size=config.scene_size, seed=config.seed)
        return train, val, train.class_names
    from segedge.data.datasets import holdout_note, train_and_val

    kind, sep, root = config.data.partition(":")
    if not sep or not root:
        raise SegedgeError(f"--data takes synthetic or KIND:ROOT (e.g. cityscapes:/data/cityscapes), got {config.data!r}")
    train, val, holdout = train_and_val(kind, root, size=config.scene_size)
    if holdout is not None:
        log(holdout_note(root, holdout))
    return train, val, tuple(train.class_names)


def _render_scenes(scenes: SyntheticScenes, count: int, what: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scenes ``0 .. count-1`` as ``scenes.batch`` returns them, with a bar saying what the wait is."""
    from tqdm import tqdm

    height, width = scenes.size
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    masks = np.empty((count, height, width), dtype=np.uint8)
    for index in tqdm(range(count), desc=f"rendering {count} synthetic {what} scenes ({height}x{width})",
                      unit="scene", disable=not progress):
        images[index], masks[index] = scenes[index]
    return images, masks


def evaluate_torch(module, spec, images: np.ndarray, masks: np.ndarray, num_classes: int, batch: int = 2) -> SegmentationScores:
    """Scores of a torch module on uint8 images / masks (the FP32 reference's score)."""
    import torch

    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(to_network_input(images[start : start + batch], spec.mean, spec.std))
            cm.update(masks[start : start + batch], module(x).argmax(1).numpy())
    module.train(was_training)
    return cm.scores()


def _schedule(optimizer, config: TrainConfig):
    import torch

    if config.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / config.iterations) ** 0.9)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, config.iterations) / config.iterations)))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)


def train(config: TrainConfig, out: str | Path | None = None, progress: bool = True, resume: str | Path | None = None) -> Checkpoint:
    """Train and save the best checkpoint (to ``out`` or the cache); returns it loaded."""
    import torch
    from tqdm import tqdm

    from segedge.train.losses import build_loss

    config.validate()
    spec = get_spec(config.model)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    config = with_data_size(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    config.validate()
    path = Path(out) if out else cached_checkpoint_path(config)

    train_set, val_set, class_names = open_splits(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    num_classes = len(class_names)
    criterion = build_loss(config.loss, num_classes, IGNORE_INDEX)
    started = time.perf_counter()
    synthetic = config.data == "synthetic"
    pool = _render_scenes(train_set, config.train_scenes, "training", progress) if synthetic else None
    val_count = min(config.val_images, len(val_set))
    val_images, val_masks = _render_scenes(val_set, val_count, "val", progress) if synthetic else val_set.batch(0, val_count)

    model = spec.build(num_classes=num_classes, width=config.width).train()
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    scheduler = _schedule(optimizer, config)
    start_it, best, history = 0, None, []

    if resume is not None:
        start_it, best, history = _load_state(Path(resume), config, model, optimizer, scheduler, rng)

    def sample():
        index = int(rng.integers(0, config.train_scenes if synthetic else len(train_set)))
        image, mask = (pool[0][index], pool[1][index]) if synthetic else train_set[index]
        image, mask = random_scale_crop_flip(image, mask, config.crop, rng, config.scale_range)
        return colour_jitter(image, rng, config.jitter), mask

    def evaluate(iteration: int) -> float:
        nonlocal best
        scores = evaluate_torch(model, spec, val_images, val_masks, num_classes)
        history.append({"iteration": iteration, "miou": scores.mean_iou})
        if best is None or scores.mean_iou > best["miou"]:
            best = {"miou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy, "iteration": iteration,
                    "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if config.schedule == "plateau":
            scheduler.step(scores.mean_iou)
        return scores.mean_iou

    bar = tqdm(desc=f"train {spec.name}", disable=not progress, unit="it", initial=start_it, total=config.iterations)
    last_miou, loss_value = (history[-1]["miou"] if history else None), None

    def show(doing: str | None = None) -> None:
        """Only figures known so far (no mIoU before the first evaluation), and what a long pause is doing."""
        figures = {} if loss_value is None else {"loss": f"{loss_value:.3f}"}
        if last_miou is not None:
            figures["mIoU"] = f"{100 * last_miou:.1f}"
        if doing:
            figures["now"] = doing
        bar.set_postfix(figures, refresh=doing is not None)

    evaluating = f"evaluating on {val_count} val images"
    for it in range(start_it, config.iterations):
        crops = [sample() for _ in range(config.batch_size)]
        x = torch.from_numpy(to_network_input(np.stack([c[0] for c in crops]), spec.mean, spec.std))
        y = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64))
        outputs = model(x)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        loss = criterion(outputs[0], y)
        for aux in outputs[1:]:
            loss = loss + AUX_WEIGHT * criterion(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.schedule != "plateau":
            scheduler.step()
        done, loss_value = it + 1, loss.item()
        bar.update()
        if config.eval_every and done % config.eval_every == 0 and done < config.iterations:
            show(evaluating)
            last_miou = evaluate(done)
            model.train()
            _save_state(state_path(path), config, model, optimizer, scheduler, rng, done, best, history)
        show()
    show(evaluating)
    last_miou = evaluate(config.iterations)
    show()
    bar.close()
    model.load_state_dict(best["state_dict"])
    info = {
        "config": config.recipe(),
        "seconds": round(time.perf_counter() - started, 1),
        "val_miou": best["miou"],
        "val_pixel_accuracy": best["pixel_accuracy"],
        "best_iteration": best["iteration"],
        "history": history,
        "val_images": val_count,
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(path, model.eval(), spec.name, config.width, class_names, info)
    _save_state(state_path(path), config, model, optimizer, scheduler, rng, config.iterations, best, history)
    return load_checkpoint(path)


def _save_state(path: Path, config, model, optimizer, scheduler, rng, iteration, best, history) -> None:
    import torch

    payload = {"recipe": config.recipe(), "iteration": iteration, "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "best": best, "history": history}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_state(path: Path, config, model, optimizer, scheduler, rng):
    import torch

    if not path.is_file():
        raise CheckpointError(f"no training state at {path} to resume from (it is written beside the checkpoint as *.state.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"training state {path} is unreadable ({type(exc).__name__})") from None
    recipe = {k: v for k, v in config.recipe().items() if k != "iterations"}
    saved = {k: v for k, v in state["recipe"].items() if k != "iterations"}
    if saved != recipe:
        changed = sorted(k for k in recipe if recipe[k] != saved.get(k))
        raise CheckpointError(f"cannot resume from {path}: the recipe changed ({', '.join(changed)}); only --iterations may grow")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state["iteration"], state["best"], state["history"]


def trained_checkpoint(config: TrainConfig, progress: bool = True) -> Checkpoint:
    """The cached checkpoint for this recipe, training it first if the cache lacks it."""
    path = cached_checkpoint_path(config)
    if path.is_file():
        return load_checkpoint(path, expect_model=config.model)
    return train(config, progress=progress)

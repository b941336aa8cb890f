"""Shared fixtures: tiny widths and sizes so the whole suite stays well inside CI's budget on 2 cores."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_weight_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.cache/segedge."""
    monkeypatch.setenv("SEGEDGE_CACHE", str(tmp_path_factory.getbasetemp() / "segedge-cache"))


TINY_TRAIN = dict(
    model="unet",
    width=0.125,
    iterations=60,
    batch_size=4,
    scene_size=(64, 128),
    crop=(64, 64),
    train_scenes=24,
    val_images=4,
    lr=1e-2,
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A U-Net trained for a few seconds on synthetic scenes: enough for parity figures to mean something."""
    from segedge.train.loop import TrainConfig, train

    path = tmp_path_factory.mktemp("ckpt") / "unet-tiny.pt"
    return train(TrainConfig(**TINY_TRAIN, threads=2), out=path, progress=False)


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


# files whose one test shares a zoo model's session export (tests/models/conftest.py) with the contract tests
ZOO_EXPORT_FILES = {"test_bisenetv2.py": "bisenetv2", "test_ddrnet.py": "ddrnet23slim", "test_enet.py": "enet"}


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (README's command runs ``-n auto --dist loadgroup``), a test file stays on one worker, so
    its module fixtures (an sshd, a Ray cluster, an export) are built once; the zoo's contract tests are grouped by
    model instead, so the models' exports spread over the workers, each exported once."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = item.nodeid.split("::")[0]
        group = path
        params = getattr(getattr(item, "callspec", None), "params", {})
        if path.endswith("models/test_contract.py") and (params.get("exported") or params.get("name")):
            group = f"zoo:{params.get('exported') or params.get('name')}"
        elif path.rsplit("/", 1)[-1] in ZOO_EXPORT_FILES:
            group = f"zoo:{ZOO_EXPORT_FILES[path.rsplit('/', 1)[-1]]}"
        item.add_marker(pytest.mark.xdist_group(group))

"""Shared fixtures: tiny widths and sizes so the whole suite stays well inside CI's budget on 2 cores."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import pytest

if TYPE_CHECKING:
    from zoo_exports import Exported


@pytest.fixture(autouse=True)
def _isolated_weight_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.cache/segedge."""
    monkeypatch.setenv("SEGEDGE_CACHE", str(tmp_path_factory.getbasetemp() / "segedge-cache"))


@pytest.fixture(scope="session")
def zoo_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], "Exported"]:
    """``zoo_export(name)``: the model's export, made on first use. Tests read it and never change it.

    Under pytest-xdist the workers share one folder of this run (the parent of each worker's base temp holds only
    this run), so a model is exported once, by whichever worker asks first; a run without xdist keeps to its own
    base temp (there the parent holds earlier runs' folders, made by older code)."""
    from segedge.models.registry import get_spec
    from zoo_exports import shared_zoo_export

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zoo-exports"
    done: dict[str, "Exported"] = {}

    def get(name: str) -> "Exported":
        name = get_spec(name).name  # an alias shares its model's export
        if name not in done:
            done[name] = shared_zoo_export(name, root)
        return done[name]

    return get


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


# Scheduling under pytest-xdist (README's command runs ``-n auto``). A test file is one unit that one worker runs, so
# its module fixtures (an sshd, a Ray cluster, a venv) are built once; the files that export every zoo model are one
# unit per model instead, so the exports spread over the workers; the slowest units start first, so the short files
# fill the end of the run on both workers. (xdist's own ``--dist loadgroup`` cannot do this with pytest 9: it renames
# ``item._nodeid``, which pytest 9 no longer reads.)

# seconds of one worker on 2 cores (``--durations=0``): first, in this order
SLOW_FILES = (
    "flows/test_source_torchvision.py",  # 240: a venv with torch 2.14.1 + torchvision, then three library models
    "flows/test_remote.py",  # 195: benches over ssh to a local sshd
    "flows/test_hostile.py",  # 125: killed and concurrent runs
    "flows/test_pipeline.py",  # 70
    "flows/test_fleet.py",  # 58: a Ray cluster
    "test_light_install.py",  # 55: a venv without torch
)
# a unit per zoo model: the tests whose parameter (``name`` or ``exported``) is the model
PER_MODEL_FILES = ("models/test_contract.py", "backends/test_check.py")


def schedule_unit(nodeid: str) -> str:
    """The scheduling unit of a test id: its file, or its file and zoo model in PER_MODEL_FILES."""
    from segedge.models.registry import list_models

    path = nodeid.split("::")[0].removeprefix("tests/")
    if path in PER_MODEL_FILES and nodeid.endswith("]"):
        param = nodeid[nodeid.rindex("[") + 1:-1]
        models = [m for m in list_models() if param == m or param.startswith(f"{m}-")]
        if models:
            return f"{path}[{max(models, key=len)}]"  # segnet-trt-1 is segnet-trt's, not segnet's
    return path


def _rank(path: str) -> int:
    return SLOW_FILES.index(path) if path in SLOW_FILES else len(SLOW_FILES) + (path not in PER_MODEL_FILES)


def pytest_collection_modifyitems(config, items):
    """The slowest files first (a stable sort: each file keeps its order and its fixtures' grouping)."""
    items.sort(key=lambda item: _rank(item.nodeid.split("::")[0].removeprefix("tests/")))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown (and unused) where it is not installed
def pytest_xdist_make_scheduler(config, log):
    """Units as ``schedule_unit`` says, in collection order, for xdist's default ``--dist load``; another --dist as asked."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_unit(nodeid)

    config.option.loadscopereorder = False  # keep the slowest-first order (not xdist's most-tests-first)
    return UnitScheduling(config, log)

"""The model tests' shared export: one per zoo model and test session (see zoo_exports.py)."""

from __future__ import annotations

from typing import Callable

import pytest

from segedge.models.registry import get_spec
from zoo_exports import Exported, export_zoo_model


@pytest.fixture(scope="session")
def zoo_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """``zoo_export(name)``: the model's export, made on first use. Tests read it and never change it."""
    done: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        name = get_spec(name).name  # an alias shares its model's export
        if name not in done:
            done[name] = export_zoo_model(name, tmp_path_factory.mktemp(name))
        return done[name]

    return get

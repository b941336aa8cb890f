"""The model zoo: importing this package imports every module in it, and each registers its family.

Adding a model is one file here: no import list to keep in step (a small departure from DESIGN.md's
"one file plus one import line", which gained nothing but a way to forget the line). Import errors are
not swallowed: a broken model file fails loudly.
"""

import importlib
import pkgutil

_NOT_FAMILIES = {"blocks", "registry", "checkpoint"}  # shared code, not architectures

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _NOT_FAMILIES and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

"""The dispatch to one adapter per library's saved model: ``hf:DIR``, ``torchvision:NAME``, ``smp:DIR``, a
``torch.export`` or TorchScript file. A module of its own so the adapters, which build on the package's
:func:`~segedge.flows.sources.torch_source`, are imported by nothing the package itself imports."""

from __future__ import annotations

from pathlib import Path

from segedge.flows.sources import Source, SourceOptions


def library_source(model: str, options: SourceOptions) -> Source:
    """One adapter per library, each reading the files the library writes (never the network) and returning the
    same :class:`Source` through :func:`torch_source`. A missing library is one line naming the extra."""
    kind, _, target = model.partition(":")
    if kind == "hf":
        from segedge.flows.sources.hf import hf_source

        return hf_source(target, options)
    if kind == "torchvision":
        from segedge.flows.sources.tvision import torchvision_source

        return torchvision_source(target, options)
    if kind == "smp":
        from segedge.flows.sources.smp import smp_source

        return smp_source(target, options)
    from segedge.flows.sources.saved import saved_module_source

    return saved_module_source(Path(model), options)

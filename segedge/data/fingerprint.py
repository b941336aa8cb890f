"""What a figure was scored on, as one short hash: the evaluation images and masks themselves (names and
bytes), or the generator's parameters for the built-in scenes.

Part of a bench row's identity and of an artifact's key: a dataset swapped under the same path, or another
split list, is measured anew and never served the figures of the one before.
"""

from __future__ import annotations

import hashlib
import json
import os

from segedge.core.artifacts import sha256_cached


def data_fingerprint(dataset, count: int | None = None) -> str:
    """sha256 (16 hex) of the first ``count`` items of ``dataset`` (all when None), of its classes and of the
    size it is read at. Files are hashed once per process while unchanged."""
    count = len(dataset) if count is None else min(count, len(dataset))
    digest = hashlib.sha256()
    head = {"kind": getattr(dataset, "fingerprint_kind", type(dataset).__name__), "split": getattr(dataset, "split", None), "images": count,
            "size": list(getattr(dataset, "size", None) or ()), "classes": list(getattr(dataset, "class_names", ()))}
    samples = getattr(dataset, "samples", None)
    if samples is None:  # generated scenes: the seed decides every pixel
        head["seed"] = getattr(dataset, "seed", None)
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for sample in (samples or ())[:count]:
        for path in (sample.image, sample.mask):
            digest.update(b"\0" + os.fsencode(path.name) + b"\0" + sha256_cached(path).encode())
        digest.update(b"\0" + str(getattr(sample, "encoding", "")).encode())
    return digest.hexdigest()[:16]

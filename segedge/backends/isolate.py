"""Crash isolation: a backend's build, compile and first inference run once in a child process first.

Native runtimes can die in ways Python cannot catch: OpenVINO 2026.4 segfaults compiling segedge's ENet INT8
graph, a TensorRT builder can abort or hang. Run in the bench's own process, that kills the whole sweep and
every row after it. The probe does the risky part in a spawned child (a fresh interpreter: no inherited
threads or runtime state); a signal, an abort or a hang becomes an error naming the backend, precision and
signal, and the sweep goes on. What the child builds (TensorRT engines, OpenVINO's compiled-model cache) is
cached on disk, so the parent's own build after a good probe costs little.
"""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path

from segedge.core.errors import SegedgeError

DEFAULT_TIMEOUT_S = 1800.0  # TensorRT builds of heavy nets on a Jetson take minutes; a hang takes forever


def _child(backend_name: str, artifact: str, profile, input_size, precision: str, threads: int, manifest: dict,
           replies) -> None:
    import numpy as np

    import importlib

    from segedge.backends.registry import get_backend

    try:
        if ":" in backend_name:  # module:attribute, a backend outside the registry (the crash tests use one)
            module, _, attribute = backend_name.partition(":")
            backend = getattr(importlib.import_module(module), attribute)
        else:
            backend = get_backend(backend_name)
        prepared = backend.prepare(Path(artifact), profile, input_size, precision=precision)
        runner = backend.runner(prepared, precision=precision, threads=threads, profile=profile, manifest=manifest)
        with runner:
            spec = runner.input_spec
            shape = tuple(1 if d is None and i == 0 else (d or size) for i, (d, size) in
                          enumerate(zip(spec.shape, (1, 3, *input_size))))
            runner.infer(np.zeros(shape, dtype=spec.dtype))
        replies.put("")
    except BaseException as exc:  # report, then exit non-zero: the parent turns it into the row's reason
        replies.put(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        raise SystemExit(1)


def probe(backend_name: str, artifact: Path, profile, input_size: tuple[int, int], precision: str, threads: int,
          manifest: dict, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Build, compile and run one zero batch of ``artifact`` in a child; raise :class:`SegedgeError` on a
    crash, a hang past ``timeout_s`` or an error, naming backend, precision and what happened."""
    context = multiprocessing.get_context("spawn")
    replies = context.Queue()
    child = context.Process(target=_child, args=(backend_name, str(artifact), profile, tuple(input_size), precision,
                                                 threads, manifest, replies), daemon=True)
    child.start()
    child.join(timeout_s)
    what = f"{backend_name} {precision} ({Path(artifact).name})"
    if child.is_alive():
        child.kill()
        child.join()
        raise SegedgeError(f"{what}: building or the first inference hung for {timeout_s:.0f} s; stopped it")
    try:
        message = replies.get(timeout=1)
    except Exception:  # a crashed child said nothing
        message = ""
    if child.exitcode == 0:
        return
    if child.exitcode is not None and child.exitcode < 0:
        try:
            name = signal.Signals(-child.exitcode).name
        except ValueError:
            name = f"signal {-child.exitcode}"
        raise SegedgeError(f"{what}: the runtime crashed ({name}) building, compiling or in its first inference; "
                           f"the sweep goes on without this row")
    raise SegedgeError(f"{what}: {message or f'the probe exited with code {child.exitcode}'}")

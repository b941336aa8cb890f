"""User-facing errors.

Every mistake a user can make (a wrong name, a bad size, a broken file) raises a subclass of
:class:`SegedgeError` whose message says what was wrong and what to do. The CLI prints the message on
one line and exits non-zero; a traceback means a bug in segedge, not in the user's input.
"""

from __future__ import annotations


class SegedgeError(Exception):
    """Base class of every error caused by input rather than by a bug."""


class UnknownModelError(SegedgeError, KeyError):
    """A model name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class InputSizeError(SegedgeError, ValueError):
    """An input size the model cannot take (not a multiple of its output stride, too small...)."""


class CheckpointError(SegedgeError):
    """A checkpoint that cannot be read or does not match the architecture or class count."""


class ArtifactError(SegedgeError):
    """An ONNX file or artifact directory that is missing, unreadable or corrupt."""


class ParityError(SegedgeError):
    """A compiled artifact disagrees with the torch FP32 reference beyond the gate."""


class CalibrationError(SegedgeError):
    """A calibration set that is too small or unusable."""


class RunnerInputError(SegedgeError, ValueError):
    """An input fed to a Runner with the wrong name, shape or dtype."""


class ProfileError(SegedgeError):
    """A hardware profile that is unknown, malformed, or that this machine cannot run."""


def brief(exc: BaseException, limit: int = 300) -> str:
    """An exception from a library as one readable line: its first line, cut at a sentence or word end (never
    mid-word) when longer than ``limit``; an OSError as the system's words and the file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > limit // 2 else cut[: cut.rfind(" ")] + " …"

"""Hardware profiles: TOML data files in ``profiles/`` loaded into a frozen :class:`Profile`.

A profile says what to run (backend, precisions, input size, batch sizes, TensorRT settings) and what the
machine must have to run it. Unknown keys are errors, so a typo never silently falls back to a default.
Profile × precision × size are combined at run time, never encoded in file names.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import warnings

from segedge.backends.registry import backend_names, get_backend
from segedge.core.errors import ProfileError
from segedge.core.hardware import Machine
from segedge.core.precision import PRECISIONS, default_tolerances
from segedge.graph.int8 import INT8_SCHEMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 6's Python 3.10
    import tomli as tomllib

GENERIC_JETSON = "jetson"


def profiles_dir() -> Path:
    """``$SEGEDGE_PROFILES``, else the repository's ``profiles/`` (a source checkout), else the copy packaged
    with segedge (``segedge/profiles_data`` is a link to ``profiles/`` that wheels ship as files)."""
    env = os.environ.get("SEGEDGE_PROFILES")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent / "profiles"
    return checkout if checkout.is_dir() else package / "profiles_data"


@dataclass(frozen=True)
class TensorRTSettings:
    versions: str = ">=8.6"
    workspace_mb: int = 1024
    dla_core: int = -1
    builder_optimization_level: int = 3


@dataclass(frozen=True)
class Requirements:
    arch: tuple[str, ...] = ()
    cuda: bool = False
    jetson_module: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    backend: str
    precisions: tuple[str, ...]
    input_size: tuple[int, int]
    batch_sizes: tuple[int, ...] = (1,)
    camera_size: tuple[int, ...] = ()  # HxW of the frames the application feeds (end-to-end column); (): input_size
    fallback_backends: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    device: str = ""  # the backend's device where it has several (OpenVINO: CPU, GPU, NPU); "": its default
    threads: int = 0
    int8_scheme: str = ""  # "": the backend's own choice for the machine it runs on (x86 or arm on a CPU)
    warmup_runs: int = 3
    min_runs: int = 10
    min_seconds: float = 1.0
    record_power_mode: bool = False
    tolerance: dict = field(default_factory=default_tolerances)
    tensorrt: TensorRTSettings = field(default_factory=TensorRTSettings)
    requires: Requirements = field(default_factory=Requirements)
    path: Path | None = None

    def missing(self, machine: Machine) -> list[str]:
        """What this machine lacks to run the profile, in words a user can act on; empty when runnable."""
        lacks = []
        if self.requires.arch and machine.arch not in self.requires.arch:
            arch = "/".join(dict.fromkeys(self.requires.arch))
            lacks.append(f"{'an' if arch[0] in 'aeiou' else 'a'} {arch} CPU (this machine is {machine.arch})")
        module = self.requires.jetson_module
        if module:
            if machine.jetson_model is None:
                lacks.append(f"a Jetson {module} (no Jetson here: /proc/device-tree/model does not name one)")
            elif module.lower() not in machine.jetson_model.lower():
                lacks.append(f"a Jetson {module} (this is a {machine.jetson_model})")
        if self.requires.cuda and not machine.has_cuda_gpu:
            lacks.append("an NVIDIA CUDA GPU (nvidia-smi and torch.cuda find none)")
        if self.usable_backend(machine) is None:
            options = [self._backend_lacks(b, machine) for b in (self.backend, *self.fallback_backends)]
            lacks.append(options[0] if len(options) == 1 else "one of: " + " / ".join(options))
        return lacks

    def usable_backend(self, machine: Machine) -> str | None:
        """The first of backend, fallback_backends that this machine can run."""
        for backend in (self.backend, *self.fallback_backends):
            if not self._backend_lacks(backend, machine):
                return backend
        return None

    def _backend_lacks(self, backend: str, machine: Machine) -> str:
        return get_backend(backend).lacks(self, machine)

    def uses_backend(self, backend: str) -> bool:
        return backend in (self.backend, *self.fallback_backends)

    def int8_scheme_on(self, backend: str, machine: Machine | None) -> str:
        """The INT8 scheme a bench of this profile quantizes with: the profile's, else the backend's for the
        machine (``cpu`` on an ARM machine gets the arm scheme)."""
        return self.int8_scheme or get_backend(backend).int8_scheme(machine)


def version_in_range(version: str, spec: str) -> bool:
    """'8.6.1' in '>=8.6,<11' — enough of PEP 440 for TensorRT's plain numeric versions."""

    def parse(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:4])

    have = parse(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, number = re.match(r"(>=|<=|==|>|<)?\s*(.+)", clause).groups()
        want = parse(number)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "==": a == b, None: a == b}[op]
        if not ok:
            return False
    return True


_TOP_KEYS = {f for f in Profile.__dataclass_fields__ if f not in ("path",)} | {"int8_activation"}
_TABLES = {"tensorrt": TensorRTSettings, "requires": Requirements}


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))  # TOML is UTF-8 whatever the locale
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           f"save it as UTF-8, as TOML requires") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {path} is not valid TOML: {exc}") from None
    where = f"profile {path.name}"
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("name", "description", "backend", "precisions", "input_size"):
        if key not in data:
            raise ProfileError(f"{where}: missing required key {key!r}")
    _check_types(data, where)
    kwargs = dict(data)
    if "int8_activation" in kwargs:  # the older key: u8 meant the x86 scheme, s8 the tensorrt one
        old = kwargs.pop("int8_activation")
        scheme = {"u8": "x86", "s8": "tensorrt"}.get(old)
        if scheme is None:
            raise ProfileError(f"{where}: int8_activation must be u8 or s8 (better: int8_scheme = \"x86\", \"arm\" "
                               f"or \"tensorrt\")")
        if "int8_scheme" not in kwargs:
            kwargs["int8_scheme"] = scheme
        warnings.warn(f"{where}: int8_activation is deprecated; write int8_scheme = \"{scheme}\" instead",
                      FutureWarning, stacklevel=2)
    for key, cls in _TABLES.items():
        if key in kwargs:
            table = kwargs[key]
            valid = set(cls.__dataclass_fields__)
            bad = sorted(set(table) - valid)
            if bad:
                raise ProfileError(f"{where}: unknown key {key}.{bad[0]!r}; valid: {', '.join(sorted(valid))}")
            kwargs[key] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
    if "tolerance" in kwargs:
        bad = sorted(set(kwargs["tolerance"]) - set(PRECISIONS))
        if bad:
            raise ProfileError(f"{where}: unknown key tolerance.{bad[0]!r}; valid: {', '.join(PRECISIONS)}")
        kwargs["tolerance"] = {**default_tolerances(), **kwargs["tolerance"]}
    for key in ("precisions", "batch_sizes", "fallback_backends", "providers", "input_size", "camera_size"):
        if key in kwargs:
            if not isinstance(kwargs[key], list):
                raise ProfileError(f"{where}: {key} must be a list")
            kwargs[key] = tuple(kwargs[key])
    profile = Profile(**kwargs, path=path)
    _validate(profile, where)
    return profile


def _validate(p: Profile, where: str) -> None:
    for backend in (p.backend, *p.fallback_backends):
        if backend not in backend_names():
            raise ProfileError(f"{where}: backend {backend!r} is not one of {', '.join(backend_names())}")
    bad = [x for x in p.precisions if x not in PRECISIONS]
    if bad or not p.precisions:
        raise ProfileError(f"{where}: precisions must be a non-empty subset of {', '.join(PRECISIONS)}")
    if len(p.input_size) != 2 or any(not isinstance(v, int) or v < 1 for v in p.input_size):
        raise ProfileError(f"{where}: input_size must be [height, width], positive integers")
    if p.camera_size and (len(p.camera_size) != 2 or any(v < 1 for v in p.camera_size)):
        raise ProfileError(f"{where}: camera_size must be [height, width], positive integers")
    if not p.batch_sizes or any(not isinstance(b, int) or b < 1 for b in p.batch_sizes):
        raise ProfileError(f"{where}: batch_sizes must be positive integers")
    if p.int8_scheme and p.int8_scheme not in INT8_SCHEMES:
        raise ProfileError(f"{where}: int8_scheme must be one of {', '.join(INT8_SCHEMES)} (or left out: the "
                           f"backend's choice for the machine)")
    # every number a profile holds, with its least meaningful value: NaN compares false both ways, so a `nan`
    # tolerance would judge every row and a `nan` min_seconds end no timing loop; each is refused by its key
    least = {"threads": (p.threads, 0), "warmup_runs": (p.warmup_runs, 0), "min_runs": (p.min_runs, 1),
             "min_seconds": (p.min_seconds, 0), **{f"tolerance.{k}": (v, 0) for k, v in p.tolerance.items()},
             "tensorrt.workspace_mb": (p.tensorrt.workspace_mb, 1),
             "tensorrt.builder_optimization_level": (p.tensorrt.builder_optimization_level, 0)}
    for key, (value, lowest) in least.items():
        if not math.isfinite(value):
            raise ProfileError(f"{where}: {key} must be a finite number, not {value}")
        if value < lowest:
            must = "not be negative" if lowest == 0 else f"be at least {lowest}"
            raise ProfileError(f"{where}: {key} must {must}, not {value}")
    if p.tensorrt.dla_core < -1:
        raise ProfileError(f"{where}: tensorrt.dla_core must be -1 (no DLA) or a core number, not {p.tensorrt.dla_core}")


NUMBER = (int, float)
# the TOML type of every key ("list of X" as [X]); a wrong type is an error naming the key, not a traceback later
_TYPES = {
    "name": str, "description": str, "backend": str, "precisions": [str], "input_size": [int], "camera_size": [int], "batch_sizes": [int],
    "fallback_backends": [str], "providers": [str], "device": str, "threads": int, "int8_scheme": str, "int8_activation": str,
    "warmup_runs": int, "min_runs": int, "min_seconds": NUMBER, "record_power_mode": bool,
    "tolerance": {"*": NUMBER},
    "tensorrt": {"versions": str, "workspace_mb": int, "dla_core": int, "builder_optimization_level": int},
    "requires": {"arch": [str], "cuda": bool, "jetson_module": str},
}


def _type_name(kind) -> str:
    if isinstance(kind, list):
        return f"a list of {_type_name(kind[0]).split(' ', 1)[-1]}s"
    if kind is NUMBER:
        return "a number"
    return {str: "a string", int: "an integer", bool: "true or false", dict: "a table"}[kind]


def _is(value, kind) -> bool:
    if isinstance(kind, list):
        return isinstance(value, list) and all(_is(v, kind[0]) for v in value)
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind)


def _check_types(data: dict, where: str, types: dict = _TYPES, prefix: str = "") -> None:
    for key, value in data.items():
        kind = types.get(key, types.get("*"))
        if kind is None:
            continue
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ProfileError(f"{where}: {prefix}{key} must be a table ([{prefix}{key}])")
            _check_types(value, where, kind, f"{prefix}{key}.")
        elif not _is(value, kind):
            raise ProfileError(f"{where}: {prefix}{key} must be {_type_name(kind)}, not {value!r}")


def list_profiles() -> list[Profile]:
    directory = profiles_dir()
    if not directory.is_dir():
        raise ProfileError(f"no profiles folder at {directory}; set SEGEDGE_PROFILES to a folder of *.toml profiles")
    return [load_profile_file(p) for p in sorted(directory.glob("*.toml"))]


def load_profile(name_or_path: str, machine: Machine | None = None) -> Profile:
    """A profile by name, or by path to a .toml file. ``jetson`` means the profile of the Jetson this runs on."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile_file(name_or_path)
    profiles = {p.name: p for p in list_profiles()}
    if name_or_path == GENERIC_JETSON:
        return _profile_of_this_jetson(profiles, machine)
    if name_or_path not in profiles:
        raise ProfileError(
            f"unknown profile {name_or_path!r}; available: {', '.join(sorted(profiles))}, {GENERIC_JETSON} "
            f"(profiles are the *.toml files in {profiles_dir()})"
        )
    return profiles[name_or_path]


def _profile_of_this_jetson(profiles: dict[str, Profile], machine: Machine | None) -> Profile:
    from segedge.core.hardware import detect_machine

    machine = machine or detect_machine()
    jetsons = [p for p in profiles.values() if p.requires.jetson_module]
    if machine.jetson_model is None:
        raise ProfileError(
            f"profile 'jetson' uses the profile of the Jetson module segedge runs on, and this machine is not a "
            f"Jetson ({machine.describe()}; /proc/device-tree/model names no Jetson). Missing here: a Jetson module "
            f"with JetPack's TensorRT and CUDA GPU. For Jetson figures run `segedge bench --profile jetson` on the "
            f"device; on this machine `--profile cpu` works. Jetson profiles: {', '.join(p.name for p in jetsons)}"
        )
    for p in jetsons:
        if p.requires.jetson_module.lower() in machine.jetson_model.lower():
            return p
    raise ProfileError(
        f"this Jetson ({machine.jetson_model}) matches no profile ({', '.join(p.name for p in jetsons)}); copy the "
        f"closest one in {profiles_dir()} and set requires.jetson_module to a part of that model name"
    )


def require_runnable(profile: Profile, machine: Machine, all_profiles: list[Profile] | None = None) -> str:
    """The backend to use; raises a refusal naming what is missing and what this machine can run instead."""
    lacks = profile.missing(machine)
    if not lacks:
        backend = profile.usable_backend(machine)
        assert backend is not None
        return backend
    runnable = [p.name for p in (all_profiles or []) if p.name != profile.name and not p.missing(machine)]
    instead = f"; this machine can run: {', '.join(runnable)}" if runnable else ""
    raise ProfileError(
        f"profile {profile.name!r} cannot run here ({machine.describe()}): missing {'; '.join(lacks)}. "
        f"Figures for {profile.name} must be measured on that hardware: run segedge there{instead}"
    )

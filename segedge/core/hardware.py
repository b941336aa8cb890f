"""What this machine is and has: the facts a profile is checked against and every figure is stored with.

Detection never imports TensorRT or initialises CUDA unless asked, and never fails: a fact that cannot be
read is recorded as absent.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

JETSON_MODEL_FILE = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class Machine:
    arch: str
    cpu: str
    cores: int
    os: str
    gpus: tuple[str, ...] = ()
    cuda_driver: str | None = None
    compute_capability: str | None = None
    tensorrt: str | None = None
    ort_providers: tuple[str, ...] = ()
    torch_cuda: bool = False
    jetson_model: str | None = None  # e.g. "NVIDIA Jetson Orin Nano Developer Kit"
    power_mode: str | None = None
    versions: dict = field(default_factory=dict)
    # the instruction-set extensions that decide which kernels run (VNNI/AMX INT8, AVX-512 BF16/AMX bf16, ARM
    # dot products): stored with every row, since the same model name ranks differently across them
    cpu_flags: tuple[str, ...] = ()

    @property
    def has_cuda_gpu(self) -> bool:
        return bool(self.gpus)

    def fingerprint(self) -> dict:
        return asdict(self)

    @property
    def machine_id(self) -> str:
        """Stable across runs on the same hardware and software; differs when either changes."""
        keys = {k: v for k, v in self.fingerprint().items() if k != "power_mode"}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        gpu = ", ".join(self.gpus) if self.gpus else "no CUDA GPU"
        flags = f" [{' '.join(self.cpu_flags)}]" if self.cpu_flags else ""
        return f"{self.arch} {self.cpu} ({self.cores} cores{flags}), {gpu}"


# the flags that change which INT8 / bf16 kernels a runtime picks (x86 /proc/cpuinfo names; ARM "Features")
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
                "amx_fp16", "asimd", "asimddp", "i8mm", "bf16", "sve")


def cpu_flags() -> tuple[str, ...]:
    """The :data:`KERNEL_FLAGS` this CPU has, in that order (empty where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return tuple(f for f in KERNEL_FLAGS if f in have)
    except OSError:
        pass
    return ()


def cpu_model() -> str:
    """The CPU's model name (figures are stored and printed with it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def this_cpu() -> Machine:
    """This machine's CPU facts alone (no GPU, driver or package probe): what picking a CPU's INT8 scheme needs."""
    return Machine(arch=platform.machine(), cpu=cpu_model(), cores=os.cpu_count() or 1, os=platform.system(),
                   cpu_flags=cpu_flags())


def _jetson_model() -> str | None:
    try:
        text = JETSON_MODEL_FILE.read_bytes().decode(errors="ignore").strip("\x00 \n")
    except OSError:
        return None
    return text if "jetson" in text.lower() else None


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None


def _nvidia_smi() -> tuple[tuple[str, ...], str | None, str | None]:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    if not out:
        return (), None, None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    names = tuple(r[0] for r in rows)
    driver = rows[0][1] if len(rows[0]) > 1 else None
    cc = rows[0][2] if len(rows[0]) > 2 else None
    return names, driver, cc


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


def detect_machine() -> Machine:
    """Read this machine's facts (cheap: no CUDA context unless torch already reports CUDA)."""
    gpus, driver, cc = _nvidia_smi()
    torch_cuda = False
    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
        if torch_cuda and not gpus:
            gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            major, minor = torch.cuda.get_device_capability(0)
            cc = f"{major}.{minor}"
    except Exception:  # a broken torch install must not stop detection
        pass
    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    except Exception:
        providers = ()
    tensorrt = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt_libs")
    jetson = _jetson_model()
    power = _run(["nvpmodel", "-q"]) if jetson else None
    versions = {p: v for p in ("segedge", "torch", "onnx", "onnxruntime", "onnxsim", "numpy", "openvino", "nncf")
                if (v := _version(p))}
    versions["python"] = platform.python_version()
    return Machine(
        arch=platform.machine(),
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        os=platform.platform(),
        gpus=gpus,
        cuda_driver=driver,
        compute_capability=cc,
        tensorrt=tensorrt,
        ort_providers=providers,
        torch_cuda=torch_cuda,
        jetson_model=jetson,
        power_mode=power.splitlines()[0] if power else None,
        versions=versions,
        cpu_flags=cpu_flags(),
    )

"""Precisions as records: one place says what each precision is called, which artifact holds it, the parity
gate it must pass and the tolerance a profile gives it by default.

Everything else asks here: the export chain (which stages to build), the CLI (``--fp16``, ``--int8`` and
``--precisions`` come from :data:`PRECISIONS`), profiles (tolerances, valid names), bench (which file a row
times). Adding a precision is one :class:`Precision` (plus a :class:`Stage` when it has its own file) and the
graph step that builds it, registered with the export flow; backends list which precisions they run.

Mixed INT8 (``--max-drop``, some layers kept float) is a kind of int8: same stage, same file, same gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from segedge.core.errors import SegedgeError


@dataclass(frozen=True)
class ParityGate:
    """The least agreement (fraction of pixels) and the most mIoU drop (points) an artifact may show."""

    min_argmax_agreement: float
    max_miou_drop: float | None = None


@dataclass(frozen=True)
class Stage:
    """One artifact of the chain: its file name in the artifact directory and the gate it must pass."""

    name: str
    file: str
    gate: ParityGate
    checked_on: str = "onnxruntime"  # the backend whose CPU runner checks parity (its fp32 arithmetic)


# FP32 graphs must be the same network; FP16 and INT8 are allowed the drift their precision implies, and
# their real cost is reported next to the gate. Tight enough that a broken conversion never passes.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("onnx", "model.onnx", ParityGate(0.999)),
    Stage("sim", "model.sim.onnx", ParityGate(0.999)),
    Stage("fp16", "model.fp16.onnx", ParityGate(0.99, max_miou_drop=1.0)),
    Stage("int8", "model.int8.onnx", ParityGate(0.90, max_miou_drop=3.0)),
    # INT8 placed by NNCF (the openvino scheme): its own file, so a store serving both onnxruntime and
    # OpenVINO keeps both graphs instead of rebuilding one over the other. NNCF quantizes OpenVINO's own model
    # of the FP32 graph (as a user of OpenVINO would), so the artifact is an OpenVINO IR (.xml + .bin): NNCF's
    # ONNX backend placed its quantizers elsewhere on transformers and cost SegFormer-B0 up to 2.8 points more.
    # OpenVINO, the only runtime that reads it, checks its parity.
    Stage("int8-nncf", "model.int8-nncf.xml", ParityGate(0.90, max_miou_drop=3.0), checked_on="openvino"),
)}
INT8_STAGES = ("int8", "int8-nncf")


@dataclass(frozen=True)
class Precision:
    """A precision a row can be measured at. ``stage`` names the artifact that holds it; ``tolerance`` is the
    mIoU drop (points) within which a bench row is ✅ unless a profile says otherwise."""

    name: str
    stage: str
    tolerance: float
    summary: str  # how it is built, in a line (the CLI flag's help)

    @property
    def file(self) -> str:
        return STAGES[self.stage].file

    @property
    def gate(self) -> ParityGate:
        return STAGES[self.stage].gate

    @property
    def optional(self) -> bool:
        """Built only when asked for (fp32 is always built: every other precision is derived from it)."""
        return self.stage not in ("onnx", "sim")


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "sim", 0.1, "the simplified FP32 graph (always built)"),
    Precision("fp16", "fp16", 0.5, "also write an FP16 graph (FP32 inputs/outputs)"),
    Precision("int8", "int8", 1.0, "also write a static Q/DQ INT8 graph"),
    # bf16 needs no file of its own: the backend runs the FP32 graph with bf16 arithmetic (OpenVINO's
    # inference_precision, TensorRT's BF16 flag, torch's bfloat16), so its stage is the FP32 one
    Precision("bf16", "sim", 0.5, "run the FP32 graph with bf16 arithmetic (backends and CPUs that have it)"),
)}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise SegedgeError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def stage_for(precision: str, quantizer: str = "onnxruntime") -> str:
    """The artifact stage that holds ``precision``; INT8 placed by NNCF (``quantizer`` "nncf") has its own."""
    stage = get_precision(precision).stage
    return "int8-nncf" if stage == "int8" and quantizer == "nncf" else stage


def parse_precisions(names) -> tuple[str, ...]:
    """Names (a sequence, or comma-separated text) checked against :data:`PRECISIONS`, in the order given."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return tuple(get_precision(n).name for n in names)


def default_tolerances() -> dict[str, float]:
    return {name: p.tolerance for name, p in PRECISIONS.items()}

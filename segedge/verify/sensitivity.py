"""Which layers INT8 hurts, and automatic mixed precision built on that ranking.

Sensitivity quantizes one layer (or one block of layers) *alone* and measures the mIoU drop and argmax
agreement against the FP32 reference on the evaluation images. Calibration runs once: every variant reads
the same ranges cache (:class:`~segedge.graph.int8.CalibratedGraph`), so a layer's figure differs from another's
only by which weights and activations were rounded.

Mixed precision starts from the full-INT8 graph and, when its drop exceeds the budget, keeps the most
sensitive layers float in growing groups (1, 2, 3, 4, 6, 8, 12, ... then all) until the drop meets the
budget. Sensitivities do not add up exactly (quantization errors interact), which is why every candidate
is measured rather than predicted. The search stops at the first candidate that meets the budget, and
says so; when even the all-float candidate (or the last step allowed) misses, it says that instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from segedge.core.artifacts import scratch_dir
from segedge.verify.compare import ParityReport, Reference, compare_to_reference
from segedge.graph.int8 import CalibratedGraph

Log = Callable[[str], None]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer (or block) quantized alone, everything else float."""

    name: str  # the node name in the prepared graph, or the block's module path
    op_type: str  # "Conv", ...; "block" for a group
    layers: tuple[str, ...]  # node names quantized together
    scope: str  # the torch module the layer came from, where the export recorded it; "" otherwise
    miou_drop: float  # points
    argmax_agreement: float
    max_abs_diff: float

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}


def checker(graph: CalibratedGraph, path: str | Path, threads: int):
    """The CPU runner that scores a candidate of ``graph``: onnxruntime, or OpenVINO (f32) for NNCF's graphs,
    whose zero-point shapes onnxruntime's QLinearConv refuses."""
    if graph.config.scheme.quantizer == "nncf":
        from segedge.backends.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads)
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, threads=threads)


def _most_sensitive_first(item: LayerSensitivity) -> tuple[float, float]:
    # mIoU drop decides; on a small evaluation set many layers tie at ~0, and argmax agreement breaks the tie
    return (-round(item.miou_drop, 3), item.argmax_agreement)


def torch_scopes(onnx_path: str | Path, graph_path: str | Path | None = None) -> dict[str, str]:
    """Node name → torch module path (``down1.1.conv``) from the exporter's metadata, when it recorded one.

    The simplifier and onnxruntime's pre-processing drop node metadata but keep node names, so this reads
    the unsimplified export. They also fuse nodes into new ones (a Linear's MatMul + Add becomes ``Gemm_4``):
    given ``graph_path`` (the graph whose layers are ranked), such a node takes the module of the export's
    node that consumed its weights, or else of the one that produced its output, so it falls in its block.
    """
    import ast

    import onnx

    exported = onnx.load(str(onnx_path), load_external_data=False).graph
    scopes = {}
    for node in exported.node:
        props = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" not in props:
            continue
        try:
            names = ast.literal_eval(props["pkg.torch.onnx.name_scopes"])
        except (ValueError, SyntaxError):
            continue
        modules = [n for n in names[:-1] if n]  # the last entry is the op itself
        if modules:
            scopes[node.name] = modules[-1]
    if graph_path is None or not scopes:
        return scopes
    weights = {t.name for t in exported.initializer}
    weight_scope: dict[str, str] = {}  # an initializer → the module of the node that reads it
    output_scope: dict[str, str] = {}  # a tensor → the module of the node that writes it
    for node in exported.node:
        scope = scopes.get(node.name)
        if scope:
            weight_scope.update({name: scope for name in node.input if name in weights})
            output_scope.update({name: scope for name in node.output})
    found = dict(scopes)
    for node in onnx.load(str(graph_path), load_external_data=False).graph.node:
        if node.name and node.name not in found:
            scope = next((weight_scope[n] for n in node.input if n in weight_scope), None) or next(
                (output_scope[n] for n in node.output if n in output_scope), None)
            if scope:
                found[node.name] = scope
    return found


def blocks(graph: CalibratedGraph, scopes: dict[str, str], depth: int) -> dict[str, list[str]]:
    """Group the graph's layers by the first ``depth`` components of their torch module path."""
    groups: dict[str, list[str]] = {}
    for layer in graph.layers():
        scope = scopes.get(layer.name)
        key = ".".join(scope.split(".")[:depth]) if scope else layer.name
        groups.setdefault(key, []).append(layer.name)
    return groups


BLOCK_TARGET = (6, 24)  # how many blocks a ranking aims for: enough to localise, few enough to be quick
REFINE_BLOCKS = 3  # the worst blocks whose layers are then measured one by one ...
# ... while they hold at most this many layers together (the worst block is refined whole), and only blocks that
# cost something alone: DeepLab v2 refined 30 layers (layer4, layer3, stem) for a search that kept 2 of layer4's
# float, 36 of its 39 evaluations and 958 s on 2 cores
REFINE_LAYERS = 16


def auto_blocks(graph: CalibratedGraph, scopes: dict[str, str]) -> dict[str, list[str]]:
    """Blocks for a ranking: the shallowest torch-module depth that gives at least ``BLOCK_TARGET[0]`` groups; for
    a graph without module names (an outside ONNX), consecutive runs of layers in graph order, about 12 of them."""
    layers = [layer.name for layer in graph.layers()]
    if scopes and sum(name in scopes for name in layers) >= len(layers) // 2:
        for depth in range(1, 6):
            groups = blocks(graph, scopes, depth)
            if len(groups) >= min(BLOCK_TARGET[0], len(layers)):
                if len(groups) <= BLOCK_TARGET[1]:
                    return groups
                break
    size = max(1, -(-len(layers) // 12))
    return {f"layers {i + 1}-{min(i + size, len(layers))}": layers[i : i + size] for i in range(0, len(layers), size)}


def block_ranking(graph: CalibratedGraph, reference: Reference, threads: int = 1, scopes: dict[str, str] | None = None,
                  log: Log = lambda _: None) -> tuple[list[LayerSensitivity], list[LayerSensitivity]]:
    """Every layer ranked with few measurements: each block quantized alone, then each layer alone inside the
    ``REFINE_BLOCKS`` worst blocks; those layers come first (most costly first), then the other blocks' layers in
    their block's order. ``len(blocks) + layers in the worst blocks`` evaluations instead of one per layer.
    Returns (the layer ranking, the blocks ranked, each quantized alone)."""
    scopes = scopes or {}
    groups = auto_blocks(graph, scopes)
    ranked_blocks = layer_sensitivity(graph, reference, threads, groups=groups, scopes=scopes)
    worst = refined_blocks(ranked_blocks)
    members = [name for b in worst for name in b.layers]
    log(f"int8  {len(groups)} blocks measured; refining {len(members)} layers of the worst: "
        + ", ".join(f"{b.name} ({b.miou_drop:+.2f})" for b in worst))
    refined = layer_sensitivity(graph, reference, threads, groups={n: [n] for n in members}, scopes=scopes)
    op_types = {layer.name: layer.op_type for layer in graph.layers()}
    nan = float("nan")
    rest = [LayerSensitivity(name, op_types[name], (name,), scopes.get(name, b.name), nan, nan, nan)
            for b in ranked_blocks if b.name not in {w.name for w in worst} for name in b.layers]
    return refined + rest, ranked_blocks


def refined_blocks(ranked_blocks: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """The blocks whose layers get measured one by one: the worst block whole, then the next worst while they
    cost something alone and hold at most ``REFINE_LAYERS`` layers together, up to ``REFINE_BLOCKS`` blocks."""
    chosen: list[LayerSensitivity] = []
    for block in ranked_blocks[:REFINE_BLOCKS]:
        if chosen and (not block.miou_drop > 0 or sum(len(b.layers) for b in chosen) + len(block.layers) > REFINE_LAYERS):
            break
        chosen.append(block)
    return chosen


def layer_sensitivity(
    graph: CalibratedGraph,
    reference: Reference,
    threads: int = 1,
    groups: dict[str, list[str]] | None = None,
    scopes: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[LayerSensitivity]:
    """Quantize each layer (or each of ``groups``) alone and compare it to ``reference``; most sensitive first."""

    scopes = scopes or {}
    op_types = {layer.name: layer.op_type for layer in graph.layers()}
    units = groups or {name: [name] for name in op_types}
    results = []
    with scratch_dir("sensitivity") as work:
        path = Path(work) / f"one{graph.suffix}"
        for done, (name, members) in enumerate(units.items(), 1):
            graph.quantize(path, only=members)
            report = compare_to_reference(checker(graph, path, threads), reference)
            single = len(members) == 1 and name == members[0]
            results.append(LayerSensitivity(
                name=name,
                op_type=op_types[members[0]] if single else "block",
                layers=tuple(members),
                scope=scopes.get(members[0], "") if single else name,
                miou_drop=report.miou_drop,
                argmax_agreement=report.argmax_agreement,
                max_abs_diff=report.max_abs_diff,
            ))
            if progress:
                progress(done, len(units))
    return sorted(results, key=_most_sensitive_first)


def sensitivity_markdown(results: list[LayerSensitivity], top: int | None = None,
                         full_int8: ParityReport | None = None) -> str:
    """A Markdown table, most sensitive first."""
    shown = results[:top] if top else results
    lines = ["| rank | layer | op | module | mIoU drop (points) | argmax agreement % | max abs diff |",
             "|---:|---|---|---|---:|---:|---:|"]
    for rank, item in enumerate(shown, 1):
        lines.append(f"| {rank} | `{item.name}` | {item.op_type} | {item.scope or '–'} | {item.miou_drop:+.3f} | "
                     f"{100 * item.argmax_agreement:.3f} | {item.max_abs_diff:.3g} |")
    if top and len(results) > top:
        lines.append(f"\n{len(results) - top} more layers, less sensitive, not shown.")
    if full_int8 is not None:
        lines.append(f"\nEvery layer in INT8 at once: mIoU drop {full_int8.miou_drop:+.3f} points, argmax agreement "
                     f"{100 * full_int8.argmax_agreement:.3f} % on {full_int8.images} images.")
    return "\n".join(lines)


def sensitivity_bar_chart(results: list[LayerSensitivity], path: str | Path, top: int | None = None,
                          title: str = "INT8 sensitivity: each layer quantized alone") -> Path:
    """Horizontal bars of mIoU drop per layer (most sensitive on top), argmax disagreement beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = (results[:top] if top else results)[::-1]
    labels = [f"{r.name} ({r.scope})" if r.scope and r.scope != r.name else r.name for r in shown]
    height = max(2.5, 0.28 * len(shown) + 1.2)
    fig, (ax_drop, ax_agree) = plt.subplots(1, 2, figsize=(11, height), sharey=True,
                                            gridspec_kw={"width_ratios": [3, 2]})
    y = range(len(shown))
    drops = [r.miou_drop for r in shown]
    ax_drop.barh(y, drops, color=["#c0392b" if d > 0 else "#7f8c8d" for d in drops])
    ax_drop.set_yticks(list(y), labels, fontsize=7)
    ax_drop.axvline(0, color="black", linewidth=0.6)
    ax_drop.set_xlabel("mIoU drop vs FP32 (points)")
    ax_agree.barh(y, [100 * (1 - r.argmax_agreement) for r in shown], color="#2980b9")
    ax_agree.set_xlabel("pixels whose class changes (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# automatic mixed precision ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchStep:
    float_layers: int
    miou_drop: float
    argmax_agreement: float
    meets_budget: bool
    drop_high: float | None = None  # the upper end of the drop's 95 % paired bootstrap interval: what must meet it


@dataclass(frozen=True)
class MixedPrecisionResult:
    max_drop: float
    met: bool
    full_int8: ParityReport
    chosen: ParityReport
    kept_float: tuple[LayerSensitivity, ...]  # with the sensitivity that got each one kept
    steps: tuple[SearchStep, ...]
    quantizable_layers: int
    latency_ms: dict  # median ms at batch 1: fp32, full_int8, chosen (onnxruntime, interleaved)
    message: str
    order: str = "sensitivity"
    blocks: tuple[LayerSensitivity, ...] = ()  # the block ranking (order "blocks"): each block quantized alone

    def as_dict(self) -> dict:
        return {
            "max_drop_points": self.max_drop,
            "order": self.order,
            "met": self.met,
            "message": self.message,
            "quantizable_layers": self.quantizable_layers,
            "kept_float": [
                {"layer": k.name, "op_type": k.op_type, "module": k.scope, "why": (
                    ("among the layers nearest the output (output-first search: not measured alone)"
                     if self.order == "output-first" else
                     f"in block {k.scope}, ranked by its block's cost (not measured alone)")
                    if math.isnan(k.miou_drop) else
                    f"quantized alone it costs {k.miou_drop:+.3f} mIoU points and "
                    f"{100 * (1 - k.argmax_agreement):.3f} % of pixels change class"),
                 "alone_miou_drop_points": k.miou_drop, "alone_argmax_agreement": k.argmax_agreement}
                for k in self.kept_float
            ],
            "full_int8": {"miou_drop_points": self.full_int8.miou_drop,
                          "argmax_agreement": self.full_int8.argmax_agreement},
            "chosen": {"miou_drop_points": self.chosen.miou_drop, "argmax_agreement": self.chosen.argmax_agreement},
            "steps": [asdict(s) for s in self.steps],
            "blocks": [{"block": b.name, "layers": len(b.layers), "alone_miou_drop_points": b.miou_drop,
                        "alone_argmax_agreement": b.argmax_agreement} for b in self.blocks],
            "latency_ms": self.latency_ms,
        }


def _scored(graph: CalibratedGraph, path: Path, reference: Reference, threads: int) -> tuple[ParityReport, float]:
    """(parity report, upper end of the drop's 95 % paired bootstrap interval) of one candidate."""
    from segedge.verify.compare import accuracy_on_active_runner

    with checker(graph, path, threads) as runner:
        accuracy = accuracy_on_active_runner(runner, reference)
    high = accuracy.interval.high
    return accuracy.report, (accuracy.report.miou_drop if high is None or math.isnan(high) else high)


class ExclusionSchedule:
    """How many of the most sensitive layers to keep float at each step of the search.

    Doubling first (1, 2, 4, 8, ...: a segmentation net usually has a handful of fragile layers, but a heavy one
    may need dozens), with every layer float as the last step left while nothing has met the budget, so a budget
    missed there cannot be met by any exclusion set of this ranking. Once a count meets it, the steps left bisect
    between the largest count that missed and the smallest that met: DeepLab v2's old ladder (1, 2, 3, 4, 6, then
    all 78) could only answer "all float" past six layers.
    """

    def __init__(self, layers: int, max_steps: int) -> None:
        self.layers, self.max_steps = layers, max_steps
        self.missed, self.met = 0, None  # largest count known to miss (0: full INT8), smallest known to meet
        self.tried: list[int] = []

    def next(self) -> int | None:
        """The next count to try, or None when the search is over."""
        left = self.max_steps - len(self.tried)
        if left <= 0 or self.layers <= 0:
            return None
        if self.met is None:
            if self.tried and self.tried[-1] >= self.layers:
                return None
            grown = 2 * self.tried[-1] if self.tried else 1
            return self.layers if left == 1 or grown >= self.layers else grown
        if self.met - self.missed <= 1:
            return None
        return (self.missed + self.met) // 2

    def record(self, count: int, met: bool) -> None:
        self.tried.append(count)
        if met:
            self.met = count if self.met is None else min(self.met, count)
        else:
            self.missed = max(self.missed, count)


def mixed_precision_search(
    graph: CalibratedGraph,
    reference: Reference,
    dst: str | Path,
    max_drop: float,
    max_steps: int = 10,
    threads: int = 1,
    scopes: dict[str, str] | None = None,
    latency_rounds: int = 10,
    log: Log = lambda _: None,
    order: str = "sensitivity",
) -> MixedPrecisionResult:
    """Leave in ``dst`` the first candidate that meets ``max_drop`` (points), or the most accurate one tried.

    ``dst`` may already hold the full-INT8 graph of ``graph``; it is (re)written either way.
    """
    from segedge.verify.timing import side_by_side_latencies

    dst = Path(dst)
    layers = graph.layers()
    with scratch_dir("mixed") as work:
        full = Path(work) / f"full{graph.suffix}"
        graph.quantize(full)
        full_report, full_high = _scored(graph, full, reference, threads)
        steps: list[SearchStep] = []
        kept: tuple[LayerSensitivity, ...] = ()
        ranked_blocks: list[LayerSensitivity] = []
        best_path, best_report = full, full_report
        if full_high <= max_drop:
            met = True
            message = (f"full INT8 meets the budget: mIoU drop {full_report.miou_drop:+.3f}, its 95 % interval up to "
                       f"{full_high:+.3f} <= {max_drop} points; no layer kept float")
        else:
            if order == "output-first":
                log(f"int8  full INT8 drops {full_report.miou_drop:+.3f} mIoU points (95 % interval up to {full_high:+.3f}) > budget {max_drop}: keeping "
                    f"layers float from the output back ({len(layers)} layers)")
                nan = float("nan")
                ranking = [LayerSensitivity(layer.name, layer.op_type, (layer.name,), (scopes or {}).get(layer.name, ""),
                                            nan, nan, nan) for layer in reversed(layers)]
            elif order == "blocks":
                log(f"int8  full INT8 drops {full_report.miou_drop:+.3f} mIoU points (95 % interval up to {full_high:+.3f}) > budget {max_drop}: ranking "
                    f"{len(layers)} layers by blocks")
                ranking, ranked_blocks = block_ranking(graph, reference, threads, scopes=scopes, log=log)
            else:
                log(f"int8  full INT8 drops {full_report.miou_drop:+.3f} mIoU points (95 % interval up to {full_high:+.3f}) > budget {max_drop}: measuring "
                    f"the sensitivity of {len(layers)} layers")
                ranking = layer_sensitivity(graph, reference, threads, scopes=scopes)
            met = False
            schedule = ExclusionSchedule(len(layers), max_steps)
            while (count := schedule.next()) is not None:
                candidate = Path(work) / f"step{len(steps)}{graph.suffix}"
                excluded = [item.name for item in ranking[:count]]
                if count == len(layers):
                    graph.write_float(candidate)  # nothing left to quantize: the float graph
                else:
                    graph.quantize(candidate, exclude=excluded)
                report, high = _scored(graph, candidate, reference, threads)
                # the whole interval must fit: with few images, a point estimate within the budget is often noise
                ok = high <= max_drop
                steps.append(SearchStep(count, report.miou_drop, report.argmax_agreement, ok, high))
                log(f"int8  {count:3d} layer(s) float: mIoU drop {report.miou_drop:+.3f} (95 % interval up to "
                    f"{high:+.3f}){'  (meets the budget)' if ok else ''}")
                schedule.record(count, ok)
                # the fewest float layers that meet the budget; until one does, the most accurate candidate
                if (ok and (not met or count < len(kept))) or (not met and report.miou_drop < best_report.miou_drop):
                    best_path, best_report, kept = candidate, report, tuple(ranking[:count])
                met = met or ok
            if met:
                message = (f"budget met with {len(kept)} of {len(layers)} layers kept float: mIoU drop "
                           f"{best_report.miou_drop:+.3f} <= {max_drop} points (full INT8: {full_report.miou_drop:+.3f})")
            else:
                tried = steps[-1].float_layers if steps else 0
                reach = "even with every layer float" if tried == len(layers) else (
                    f"after {len(steps)} steps (up to {tried} of {len(layers)} layers float)")
                message = (f"budget of {max_drop} mIoU points NOT met {reach}; keeping the most accurate candidate "
                           f"tried ({len(kept)} layers float, drop {best_report.miou_drop:+.3f}; full INT8: "
                           f"{full_report.miou_drop:+.3f}); the INT8 parity gate still applies")
        graph.copy(best_path, dst)

        batch = reference.inputs[:1]
        runners = {"fp32": checker(graph, graph.source, threads), "full_int8": checker(graph, full, threads)}
        if best_path != full:
            runners["chosen"] = checker(graph, dst, threads)
        stats = side_by_side_latencies(runners, batch, warmup=2, rounds=latency_rounds)
        latency = {name: round(s.median_ms, 3) for name, s in stats.items()}
        latency.setdefault("chosen", latency["full_int8"])
        latency["chosen_over_full_int8"] = round(latency["chosen"] / latency["full_int8"], 3)
        latency["fp32_over_chosen"] = round(latency["fp32"] / latency["chosen"], 3)
        latency["rounds"] = latency_rounds
        latency["threads"] = threads
    return MixedPrecisionResult(max_drop, met, full_report, best_report, kept, tuple(steps), len(layers), latency,
                                message, order, tuple(ranked_blocks))

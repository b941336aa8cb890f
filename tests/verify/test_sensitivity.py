"""Per-layer sensitivity and the mixed-precision budget search on the tiny trained U-Net."""

import pytest

from segedge.cli.main import build_parser

from segedge.verify.compare import compare_to_reference, reference_from_runner
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.flows.export import ExportConfig, export_model, reference_for, resolve_source
from segedge.graph.int8 import Int8Config, calibrated_graph
from segedge.models.registry import get_spec
from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.verify.sensitivity import (
    ExclusionSchedule,
    refined_blocks,
    layer_sensitivity,
    mixed_precision_search,
    sensitivity_bar_chart,
    sensitivity_markdown,
    torch_scopes,
)

SIZE = (64, 128)


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    """(calibrated graph, torch FP32 reference, node → module scopes), calibrated once for the module."""
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=4,
                          store=tmp_path_factory.mktemp("store"), threads=2)
    result = export_model(config)
    source = resolve_source(config)
    reference = reference_for(source, SyntheticScenes("val", 4, size=SIZE, seed=0), 4, threads=2)
    calib, _ = SyntheticScenes("calib", 8, size=SIZE, seed=0).batch(0, 8)
    inputs = to_network_input(calib, source.spec.mean, source.spec.std)
    with calibrated_graph(result.file("sim"), lambda: iter(inputs[i : i + 1] for i in range(8)),
                          Int8Config(calib_images=8, quantize_classifier=True), 8) as graph:
        yield graph, reference, torch_scopes(result.file("onnx"))


@pytest.fixture(scope="module")
def clipped(setup, tmp_path_factory):
    """The same graph calibrated on images at half their contrast, so INT8 clips the real ones and costs points on
    every CPU (the well-calibrated tiny U-Net's full INT8 drop is noise: -0.18 on an AVX2 EPYC, +0.0x elsewhere)."""
    graph, reference, scopes = setup
    calib, _ = SyntheticScenes("calib", 8, size=SIZE, seed=0).batch(0, 8)
    spec = get_spec("unet")
    inputs = to_network_input(calib, spec.mean, spec.std) * 0.5
    with calibrated_graph(graph.source, lambda: iter(inputs[i : i + 1] for i in range(8)),
                          Int8Config(calib_images=8, quantize_classifier=True), 8,
                          ranges_cache=tmp_path_factory.mktemp("clipped") / "ranges.json") as dim:
        yield dim, reference, scopes


@pytest.fixture(scope="module")
def ranking(setup):
    graph, reference, scopes = setup
    return layer_sensitivity(graph, reference, threads=2, scopes=scopes)


def test_every_layer_is_measured_alone_most_sensitive_first(setup, ranking):
    graph, _, _ = setup
    assert sorted(r.name for r in ranking) == sorted(layer.name for layer in graph.layers())
    assert all(r.layers == (r.name,) for r in ranking)
    drops = [round(r.miou_drop, 3) for r in ranking]
    assert drops == sorted(drops, reverse=True)
    assert all(0.9 <= r.argmax_agreement <= 1.0 for r in ranking)
    # the exporter's module path survives for the table: the classifier is a named module of the U-Net
    assert any(r.scope == "classifier" for r in ranking)


def test_table_and_bar_chart(ranking, tmp_path):
    table = sensitivity_markdown(ranking, top=5)
    lines = table.splitlines()
    assert lines[0].startswith("| rank | layer | op | module | mIoU drop (points)")
    assert len([line for line in lines if line.startswith("| ") and line[2].isdigit()]) == 5
    assert f"{len(ranking) - 5} more layers, less sensitive, not shown." in table
    png = sensitivity_bar_chart(ranking, tmp_path / "chart.png", top=8)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from figure_checks import png_panels

    width, height, panels = png_panels(png)
    assert width > 300 and height > 200 and panels >= 1


def test_blocks_group_layers_by_module(setup):
    from segedge.verify.sensitivity import blocks

    graph, reference, scopes = setup
    groups = blocks(graph, scopes, depth=1)
    assert {"inc", "down1", "classifier"} <= set(groups)
    assert sum(len(v) for v in groups.values()) == len(graph.layers())
    result = layer_sensitivity(graph, reference, threads=2, groups={k: groups[k] for k in ("inc", "classifier")})
    assert {r.name for r in result} == {"inc", "classifier"} and all(r.op_type == "block" for r in result)


def exclusion_schedule(layers: int, max_steps: int, meets=lambda count: False) -> list[int]:
    """The counts :class:`ExclusionSchedule` tries when ``meets(count)`` answers each step."""
    schedule = ExclusionSchedule(layers, max_steps)
    while (count := schedule.next()) is not None:
        schedule.record(count, meets(count))
    return schedule.tried


def test_schedule_doubles_and_ends_with_every_layer_while_nothing_meets():
    assert exclusion_schedule(23, 10) == [1, 2, 4, 8, 16, 23]
    assert exclusion_schedule(100, 4) == [1, 2, 4, 100]
    assert exclusion_schedule(1, 10) == [1]
    assert exclusion_schedule(78, 1) == [78]


@pytest.mark.parametrize("needed", [1, 3, 5, 11, 40, 77, 78])
def test_schedule_bisects_to_the_fewest_float_layers_that_meet(needed):
    """DeepLab v2 has 78 layers: where N of them must stay float, the steps find N exactly (monotone drop)."""
    tried = exclusion_schedule(78, 14, meets=lambda count: count >= needed)
    assert min(c for c in tried if c >= needed) == needed
    assert len(tried) == len(set(tried)) <= 14


def test_schedule_within_few_steps_keeps_the_best_bracket():
    tried = exclusion_schedule(78, 8, meets=lambda count: count >= 20)
    assert tried == [1, 2, 4, 8, 16, 32, 24, 20]


def test_a_budget_full_int8_meets_keeps_every_layer_int8(setup, tmp_path):
    graph, reference, scopes = setup
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=5.0, threads=2, latency_rounds=2)
    assert result.met and result.kept_float == () and result.steps == ()
    assert result.message.startswith("full INT8 meets the budget")
    assert compare_to_reference(OnnxRuntimeRunner(tmp_path / "m.onnx", threads=2), reference).miou_drop == \
        result.full_int8.miou_drop


def test_a_strict_budget_keeps_layers_float_and_stops_once_met(clipped, tmp_path):
    graph, reference, scopes = clipped
    full = _full_int8_drop(graph, reference, tmp_path)
    assert full > 0.005, f"the tiny U-Net's full INT8 costs {full} points: too little to force an exclusion"
    budget = round(full / 2, 3)
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=budget, threads=2,
                                    scopes=scopes, latency_rounds=2)
    assert result.met and len(result.kept_float) >= 1
    # the search bisects once a count meets, so its last step may be a miss: what ships is the fewest float layers
    # that met, and every smaller count it tried missed
    fewest = min((s for s in result.steps if s.meets_budget), key=lambda s: s.float_layers)
    assert len(result.kept_float) == fewest.float_layers
    assert not any(s.meets_budget for s in result.steps if s.float_layers < fewest.float_layers)
    assert result.chosen.miou_drop <= budget < result.full_int8.miou_drop
    assert result.message.startswith(f"budget met with {len(result.kept_float)} of {result.quantizable_layers} layers")
    recorded = result.as_dict()
    assert recorded["kept_float"][0]["why"].startswith("quantized alone it costs")
    assert {"fp32", "full_int8", "chosen"} <= set(recorded["latency_ms"])
    # the artifact left behind is the one measured
    assert compare_to_reference(OnnxRuntimeRunner(tmp_path / "m.onnx", threads=2), reference).miou_drop == \
        result.chosen.miou_drop


def test_an_impossible_budget_says_so(setup, tmp_path):
    graph, reference, _ = setup
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=-1.0, threads=2, latency_rounds=2)
    assert not result.met
    assert result.steps[-1].float_layers == result.quantizable_layers
    assert "budget of -1.0 mIoU points NOT met even with every layer float" in result.message
    assert "the INT8 parity gate still applies" in result.message


def test_the_step_limit_is_said(setup, tmp_path):
    graph, reference, _ = setup
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=-1.0, max_steps=1, threads=2,
                                    latency_rounds=2)
    assert not result.met and len(result.steps) == 1
    assert "NOT met even with every layer float" in result.message  # one step allowed: it is the all-float one


def test_cli_prints_the_table_and_writes_the_chart(tiny_checkpoint, tmp_path, capsys):
    args = build_parser().parse_args(["sensitivity", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path),
                              "--input-size", "64x128", "--calib-images", "4", "--eval-images", "2", "--top", "3",
                              "--png", str(tmp_path / "s.png"), "--out", str(tmp_path / "store"), "--threads", "2",
                              "--quiet", "--block-depth", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| rank | layer |" in out and "Every layer in INT8 at once" in out
    assert (tmp_path / "s.png").is_file()


def _full_int8_drop(graph, reference, tmp_path) -> float:
    graph.quantize(tmp_path / "full.onnx")
    return compare_to_reference(OnnxRuntimeRunner(tmp_path / "full.onnx", threads=2), reference).miou_drop


def test_block_ranking_covers_every_layer_with_fewer_evaluations(setup, monkeypatch):
    import math

    from segedge.verify import sensitivity
    from segedge.verify.sensitivity import REFINE_BLOCKS, auto_blocks, block_ranking

    graph, reference, scopes = setup
    layers = [layer.name for layer in graph.layers()]
    groups = auto_blocks(graph, scopes)
    assert 6 <= len(groups) <= 24 and sorted(n for g in groups.values() for n in g) == sorted(layers)
    unnamed = auto_blocks(graph, {})  # an outside ONNX: runs of consecutive layers in graph order
    assert [n for g in unnamed.values() for n in g] == layers and 10 <= len(unnamed) <= 13

    evaluations = []
    real = sensitivity.compare_to_reference
    monkeypatch.setattr(sensitivity, "compare_to_reference", lambda *a: evaluations.append(1) or real(*a))
    ranking, ranked_blocks = block_ranking(graph, reference, threads=2, scopes=scopes)
    assert sorted(b.name for b in ranked_blocks) == sorted(groups) and all(b.op_type == "block" for b in ranked_blocks)
    assert sorted(r.name for r in ranking) == sorted(layers)  # every layer once
    measured = [r for r in ranking if not math.isnan(r.miou_drop)]
    worst = sorted(groups.items(), key=lambda kv: -len(kv[1]))  # (only to bound the count below)
    assert measured == ranking[: len(measured)] and measured  # measured layers first, most costly first
    assert measured == sorted(measured, key=lambda r: (-round(r.miou_drop, 3), r.argmax_agreement))
    assert len(evaluations) == len(groups) + len(measured) < len(layers)
    assert len(measured) <= sum(len(g) for _, g in worst[:REFINE_BLOCKS])
    assert sorted(r.name for r in measured) == sorted(n for b in refined_blocks(ranked_blocks) for n in b.layers)


def _block(name: str, layers: int, drop: float):
    from segedge.verify.sensitivity import LayerSensitivity

    return LayerSensitivity(name, "block", tuple(f"{name}.{i}" for i in range(layers)), name, drop, 0.9, 0.0)


def test_refinement_measures_the_worst_block_whole_and_few_layers_after_it():
    """DeepLab v2's blocks as measured: layer4 (10 layers, +0.57), layer3 (19, +0.38), stem (1, +0.02): layer4 alone
    is refined (layer3 would take the count past REFINE_LAYERS); a block costing nothing alone is never refined."""
    deeplab = [_block("layer4", 10, 0.57), _block("layer3", 19, 0.38), _block("stem", 1, 0.02), _block("layer2", 13, -0.01)]
    assert [b.name for b in refined_blocks(deeplab)] == ["layer4"]
    assert [b.name for b in refined_blocks([_block("a", 30, 0.1), _block("b", 2, 0.5)])] == ["a"]  # worst whole
    assert [b.name for b in refined_blocks([_block("a", 4, 0.3), _block("b", 5, 0.2), _block("c", 3, 0.1),
                                            _block("d", 1, 0.1)])] == ["a", "b", "c"]  # at most REFINE_BLOCKS
    assert [b.name for b in refined_blocks([_block("a", 4, 0.3), _block("b", 2, 0.0), _block("c", 1, 0.2)])] == ["a"]


def test_fused_gemm_nodes_keep_their_module(tmp_path):
    """The simplifier fuses a Linear's MatMul + Add on tokens into a new node (``Gemm_4``) without the exporter's
    module metadata; it must still fall in its module's block, not be a block of its own."""
    import onnx
    import torch

    from segedge.graph.simplify import simplified_onnx

    class Mixer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.block = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
            self.head = torch.nn.Conv2d(8, 3, 1)

        def forward(self, x):
            y = self.embed(x)
            b, c, h, w = y.shape
            tokens = self.block(y.flatten(2).transpose(1, 2))
            return self.head(tokens.transpose(1, 2).reshape(b, c, h, w))

    exported, simple = tmp_path / "mixer.onnx", tmp_path / "mixer.sim.onnx"
    torch.onnx.export(Mixer().eval(), (torch.randn(1, 3, 16, 16),), str(exported), dynamo=True, verbose=False)
    simplified_onnx(exported, simple)
    layers = [n.name for n in onnx.load(str(simple)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(layers) == 4
    assert not all(name in torch_scopes(exported) for name in layers)  # what the fusion loses by name alone
    scopes = torch_scopes(exported, simple)
    assert sorted(scopes[name] for name in layers) == ["block.0", "block.2", "embed", "head"]


# the budget holds the interval's upper end, not the point estimate ------------------------------------------

def _straddling(fits_when_float: bool):
    """An accuracy stand-in: every candidate drops 0.2 points, but its 95 % interval reaches 0.9 (the float graph's
    only 0.3 when ``fits_when_float``); which candidate it is comes from the ONNX file the runner loaded."""
    import onnx

    from segedge.verify.compare import ParityReport, RunnerAccuracy
    from segedge.verify.interval import DropInterval

    def accuracy(runner, reference, batch=1):
        ops = {node.op_type for node in onnx.load(str(runner.model_path)).graph.node}
        quantized = bool(ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"})
        high = 0.3 if fits_when_float and not quantized else 0.9
        report = ParityReport(images=len(reference.inputs), max_abs_diff=0.1, mean_abs_diff=0.01,
                              argmax_agreement=0.99, miou=0.5, reference_miou=0.502)
        return RunnerAccuracy(report, DropInterval(report.miou_drop, -0.5, high, len(reference.inputs), 1000))

    return accuracy


def test_a_point_estimate_within_the_budget_does_not_meet_it_while_the_interval_does_not(setup, tmp_path, monkeypatch):
    import segedge.verify.compare as compare

    graph, reference, _ = setup
    monkeypatch.setattr(compare, "accuracy_on_active_runner", _straddling(fits_when_float=False))
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=0.5, threads=2, latency_rounds=2,
                                    order="output-first")
    assert result.full_int8.miou_drop == pytest.approx(0.2)  # the point is within 0.5 ...
    assert not result.met  # ... but no candidate's interval is, so the budget is not met
    assert result.steps and not any(s.meets_budget for s in result.steps)
    assert all(s.drop_high == 0.9 and s.miou_drop == pytest.approx(0.2) for s in result.steps)
    assert result.steps[-1].float_layers == result.quantizable_layers  # it searched to the end
    assert "NOT met even with every layer float" in result.message


def test_the_search_goes_on_until_a_candidates_whole_interval_fits(setup, tmp_path, monkeypatch):
    import segedge.verify.compare as compare

    graph, reference, _ = setup
    monkeypatch.setattr(compare, "accuracy_on_active_runner", _straddling(fits_when_float=True))
    result = mixed_precision_search(graph, reference, tmp_path / "m.onnx", max_drop=0.5, threads=2, latency_rounds=2,
                                    order="output-first")
    assert result.met and len(result.kept_float) == result.quantizable_layers  # only the float graph's interval fits
    assert [s.float_layers for s in result.steps if s.meets_budget] == [result.quantizable_layers]
    assert result.message.startswith(f"budget met with {result.quantizable_layers} of {result.quantizable_layers}")

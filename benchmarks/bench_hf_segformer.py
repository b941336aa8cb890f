"""Hugging Face's SegFormer-B0 (``--model hf:DIR``) against segedge's own ``segformer-b0``: one architecture, two
sources, FP32 and INT8 on ONNX Runtime, timed round-robin in one run.

    python benchmarks/bench_hf_segformer.py --input-size 512x1024 --threads 2

Both start from random weights (timing does not depend on them): transformers' ``SegformerForSemanticSegmentation``
with the B0 configuration (``nvidia/mit-b0``'s sizes, written here: no hub), saved with ``save_pretrained`` and
read back as a user's directory would be; segedge's zoo model built untrained. Each goes through ``segedge
export`` (FP32, simplified, INT8 on the built-in scenes' calibration split) and the four graphs are timed
round-robin at batch 1, so machine noise hits all alike. Writes JSON and Markdown under benchmarks/results/ with
the CPU, its flags and the versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.cli.args import size as _size
from segedge.core.artifacts import tool_versions
from segedge.core.hardware import cpu_flags, cpu_model
from segedge.data.synthetic import CLASS_NAMES
from segedge.flows.export import ExportConfig, export_model
from segedge.verify.timing import side_by_side_latencies


def hf_b0(directory: Path, classes: int) -> Path:
    """SegFormer-B0's configuration (hidden sizes 32/64/160/256, depths 2/2/2/2, decoder 256), random weights."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_labels=classes, id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)},
        hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
        decoder_hidden_size=256)
    transformers.SegformerForSemanticSegmentation(config).eval().save_pretrained(directory)
    transformers.SegformerImageProcessor().save_pretrained(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=_size, default=(512, 1024))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--store", default="export")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="segedge-hf-b0-"))
    directory = hf_b0(work / "segformer-b0-hf", len(CLASS_NAMES))
    # random weights: timing does not depend on them, but INT8's parity gate on random logits would refuse the graph
    # it means to time, so the gates only record here (the JSON keeps each graph's parity)
    from segedge.core.precision import STAGES, ParityGate

    gates = {name: ParityGate(min_argmax_agreement=0.0, max_miou_drop=None) for name in STAGES}
    common = dict(input_size=args.input_size, precisions=("int8",), eval_images=4, store=Path(args.store),
                  threads=args.threads, gates=gates)
    exports = {
        "hf": export_model(ExportConfig(model=f"hf:{directory}", **common), log=log),
        "zoo": export_model(ExportConfig(model="segformer-b0", untrained=True, **common), log=log),
    }
    runners = {f"{name} {stage}": OnnxRuntimeRunner(result.file(stage), threads=args.threads)
               for name, result in exports.items() for stage in ("sim", "int8")}
    batch = np.random.default_rng(0).standard_normal((1, 3, *args.input_size)).astype(np.float32)
    stats = side_by_side_latencies(runners, batch, warmup=2, rounds=args.rounds)
    nodes = {}
    import onnx

    for name, result in exports.items():
        for stage in ("sim", "int8"):
            graph = onnx.load(str(result.file(stage)), load_external_data=False).graph
            kinds: dict[str, int] = {}
            for node in graph.node:
                kinds[node.op_type] = kinds.get(node.op_type, 0) + 1
            nodes[f"{name} {stage}"] = {"nodes": len(graph.node), "top": sorted(kinds.items(), key=lambda kv: -kv[1])[:6]}
    machine = {"cpu": cpu_model(), "flags": list(cpu_flags()), "arch": platform.machine(), "threads": args.threads,
               "versions": tool_versions()}
    rows = []
    for key, stat in stats.items():
        source, stage = key.split()
        fp32 = stats[f"{source} sim"].median_ms
        rows.append({"source": source, "graph": "FP32" if stage == "sim" else "INT8", "median_ms": stat.median_ms,
                     "p90_ms": stat.p90_ms, "x_own_fp32": fp32 / stat.median_ms,
                     "x_zoo_same": stats[f"zoo {stage}"].median_ms / stat.median_ms, **nodes[key]})
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"hf-segformer-b0-{args.input_size[0]}x{args.input_size[1]}-{args.threads}t-{platform.machine()}"
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    lines = [f"HF SegFormer-B0 vs segedge segformer-b0 at {args.input_size[0]}x{args.input_size[1]}, ONNX Runtime, "
             f"{args.threads} threads, {args.rounds} rounds round-robin; {machine['cpu']} "
             f"(flags: {' '.join(machine['flags']) or 'none'}); transformers "
             f"{__import__('transformers').__version__}, onnxruntime {machine['versions'].get('onnxruntime')}", "",
             "| source | graph | median ms | p90 ms | × its FP32 | × zoo's same graph | nodes | most frequent ops |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['graph']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['x_own_fp32']:.2f} | "
                     f"{r['x_zoo_same']:.2f} | {r['nodes']} | {', '.join(f'{k} {v}' for k, v in r['top'])} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

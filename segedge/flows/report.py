"""Tables, the latency-vs-mIoU Pareto front, a budget pick and plots from the results store.

A row is on the Pareto front of its profile when no other row of that profile is both faster and at least
as accurate. ``pick_under_budget`` names the most accurate row under a latency budget per profile: the
answer to "what do I ship on this device at 30 FPS?".
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from segedge.core.errors import SegedgeError
from segedge.core.results import STATUS_MARK

TABLE_COLUMNS = (
    ("profile", "profile"), ("model", "model"), ("precision", "precision"), ("size", "size"),
    ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("fps", "FPS"), ("miou", "mIoU"),
    ("miou_drop", "drop [95 % interval]"), ("eval_images", "images"), ("argmax_agreement", "agree %"), ("peak_rss_mb", "peak MB"), ("status", "status"),
    ("pareto", "Pareto"), ("cpu", "machine"),
)


def _runnable(row: dict) -> bool:
    """A row that ran at batch 1: the latency a deployment decision compares (batch rows report throughput)."""
    return (row.get("status") in ("ok", "drop", "uncertain") and row.get("median_ms") is not None and row.get("miou") is not None
            and (row.get("batch") or 1) == 1)


def mark_pareto(rows: list[dict]) -> list[dict]:
    """Add ``pareto: bool`` to every row (failed rows never are)."""
    by_profile: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        row["pareto"] = False
        if _runnable(row):
            by_profile[(row["profile"], row["machine_id"])].append(row)
    for group in by_profile.values():
        for row in group:
            dominated = any(
                other is not row
                and other["median_ms"] <= row["median_ms"]
                and other["miou"] >= row["miou"]
                and (other["median_ms"] < row["median_ms"] or other["miou"] > row["miou"])
                for other in group
            )
            row["pareto"] = not dominated
    return rows


def pick_under_budget(rows: list[dict], budget_ms: float) -> dict[str, dict | None]:
    """Per profile: the most accurate runnable row whose median latency fits the budget (None if none does)."""
    picks: dict[str, dict | None] = {}
    for row in rows:
        picks.setdefault(row["profile"], None)
        if _runnable(row) and row["median_ms"] <= budget_ms:
            best = picks[row["profile"]]
            if best is None or (row["miou"], -row["median_ms"]) > (best["miou"], -best["median_ms"]):
                picks[row["profile"]] = row
    return picks


def _cells(row: dict) -> dict[str, str]:
    machine = json.loads(row["machine"]) if isinstance(row.get("machine"), str) else row.get("machine") or {}
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    return {
        "profile": row["profile"], "model": row["model"], "precision": row["precision"],
        "size": f"{row.get('height')}x{row.get('width')}" + (f" ×{row['batch']}" if (row.get("batch") or 1) > 1 else ""),
        "median_ms": fmt(row.get("median_ms"), ".1f"), "p90_ms": fmt(row.get("p90_ms"), ".1f"),
        "fps": fmt(row.get("fps"), ".2f"),
        "miou": fmt(None if row.get("miou") is None else 100 * row["miou"], ".2f"),
        "miou_drop": fmt(row.get("miou_drop"), "+.2f") + (
            f" [{row['drop_low']:+.2f}, {row['drop_high']:+.2f}]"
            if row.get("drop_low") is not None and row.get("drop_high") is not None and row["drop_high"] != float("inf")
            else ""),
        "eval_images": "" if row.get("eval_images") is None else str(row["eval_images"]),
        "argmax_agreement": fmt(None if row.get("argmax_agreement") is None else 100 * row["argmax_agreement"], ".2f"),
        "peak_rss_mb": fmt(row.get("peak_rss_mb"), ".0f"),
        "status": STATUS_MARK.get(row.get("status"), "?")
                  + (f" uncertain: {row.get('eval_images')} images" if row.get("status") == "uncertain" else "") + (" smoke (--quick: 3 runs, not figures to quote)" if row.get("quick") else "")
                  + (f" {row['reason']}" if row.get("reason") else "") + (f" ({row['unsaved']})" if row.get("unsaved") else ""),
        "pareto": "★" if row.get("pareto") else "",
        "cpu": f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)",
    }


def render(rows: list[dict], fmt: str = "md") -> str:
    rows = mark_pareto(sorted(rows, key=lambda r: (str(r.get("profile")), str(r.get("model")), str(r.get("precision")))))
    if fmt == "json":
        clean = [{k: v for k, v in r.items() if k != "machine"} | {"machine": json.loads(r["machine"]) if isinstance(r.get("machine"), str) else r.get("machine")} for r in rows]
        return json.dumps(clean, indent=2)
    cells = [_cells(r) for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[k for k, _ in TABLE_COLUMNS])
        writer.writeheader()
        writer.writerows(cells)
        return out.getvalue()
    if fmt != "md":
        raise SegedgeError(f"unknown format {fmt!r}; use md, csv or json")
    lines = ["| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(c[k] for k, _ in TABLE_COLUMNS) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def pareto_plot(rows: list[dict], path: str | Path) -> Path:
    """Latency (log x) vs mIoU per profile, Pareto front joined by a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegedgeError("plots need matplotlib (a segedge dependency): pip install matplotlib") from None
    from segedge.core.artifacts import atomic_path

    rows = mark_pareto([r for r in rows if _runnable(r)])
    if not rows:
        raise SegedgeError("no successful measurements to plot; run `segedge bench` first")
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for profile in sorted({r["profile"] for r in rows}):
        group = [r for r in rows if r["profile"] == profile]
        for r in group:
            ax.scatter(r["median_ms"], 100 * r["miou"], marker=markers.get(r["precision"], "x"), s=50)
            low, high = r.get("drop_low"), r.get("drop_high")
            if low is not None and high is not None and abs(high) != float("inf"):
                # the drop's 95 % interval, as mIoU: a larger drop is a lower mIoU
                ax.errorbar(r["median_ms"], 100 * r["miou"], fmt="none", ecolor="grey", capsize=3, lw=1,
                            yerr=[[max(0.0, high - r["miou_drop"])], [max(0.0, r["miou_drop"] - low)]])
            ax.annotate(f"{r['model']} {r['precision']}" + (" (quick)" if r.get("quick") else ""), (r["median_ms"], 100 * r["miou"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        front = sorted((r for r in group if r["pareto"]), key=lambda r: r["median_ms"])
        ax.plot([r["median_ms"] for r in front], [100 * r["miou"] for r in front], "--", label=f"{profile} Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("median latency, batch 1 (ms, log scale)")
    data = sorted({str(r.get("data") or "synthetic") for r in rows})
    ax.set_ylabel(f"mIoU on {', '.join(data)} val (%), bars: 95 % interval of the drop")
    ax.set_title("latency vs mIoU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def overlay_png(manifest_dir: str | Path, path: str | Path, precision: str = "int8") -> Path:
    """image | FP32 prediction | <precision> prediction | pixels where they disagree, for one val image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segedge.core.artifacts import ArtifactDir, atomic_path
    from segedge.data.synthetic import SyntheticScenes
    from segedge.data.model_io import ModelIO
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    art = ArtifactDir(manifest_dir)
    manifest = art.read_manifest()
    from segedge.core.precision import get_precision

    stage = get_precision(precision).stage
    if stage not in manifest.get("stages", {}):
        raise SegedgeError(f"{manifest_dir} has no {precision} artifact; export it first")
    h, w = manifest["config"]["input_size"]
    data = manifest["config"].get("eval", {}).get("data", "synthetic")
    if data == "synthetic":
        image, _ = SyntheticScenes("val", 1, size=(h, w)).batch(0, 1)
    else:  # the row's own evaluation data
        from segedge.flows.export import evaluation_sets

        image, _ = evaluation_sets(data, (h, w), 0)[0].batch(0, 1)
    io = ModelIO.from_dict(manifest.get("io"))
    x = io.feed(image, manifest["normalization"]["mean"], manifest["normalization"]["std"])
    preds = {}
    for name, st in (("FP32", "sim"), (precision.upper(), stage)):
        with OnnxRuntimeRunner(art.file(manifest["stages"][st]["file"])) as runner:
            preds[name] = io.scores(runner.infer(x), (h, w)).argmax(1)[0]
    a, b = preds.values()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    panels = [(image[0], "image"), (a, "FP32"), (b, precision.upper()), (a != b, f"disagree ({100 * (a != b).mean():.2f} %)")]
    for ax, (data, title) in zip(axes, panels):
        ax.imshow(data, cmap=None if data.ndim == 3 else ("gray" if data.dtype == bool else "tab10"),
                  vmin=None if data.ndim == 3 or data.dtype == bool else 0, vmax=None if data.ndim == 3 or data.dtype == bool else 9)
        ax.set_title(f"{manifest['model']}: {title}", fontsize=9)
        ax.axis("off")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def write_overlays(rows: list[dict], folder: str | Path) -> list[Path]:
    """One overlay PNG per artifact directory and reduced precision among ``rows``."""
    written: dict[tuple[str, str], Path] = {}
    for row in rows:
        artifact = Path(row.get("artifact") or "")
        if row["precision"] == "fp32" or row["status"] == "failed" or not (artifact.parent / "manifest.json").is_file():
            continue
        key = (str(artifact.parent), row["precision"])
        if key not in written:
            target = Path(folder) / f"{row['model']}-{row['precision']}-{artifact.parent.name}.png"
            written[key] = overlay_png(artifact.parent, target, row["precision"])
    return list(written.values())


def summarize_budget(picks: dict[str, Any], budget_ms: float) -> str:
    lines = []
    for profile, row in sorted(picks.items()):
        if row is None:
            lines.append(f"{profile}: nothing measured runs under {budget_ms:g} ms")
        else:
            lines.append(f"{profile}: ship {row['model']} {row['precision']} — {row['median_ms']:.1f} ms, "
                         f"mIoU {100 * row['miou']:.2f} (drop {row['miou_drop']:+.2f})")
    return "\n".join(lines)


def pick_fastest_within(rows: list[dict], budget_ms: float, max_drop: float) -> dict[str, dict | None]:
    """Per profile: the fastest runnable row under ``budget_ms`` whose drop is within ``max_drop`` points at the
    *upper end* of its interval (the drop itself where no interval was measured): the row to ship."""
    picks: dict[str, dict | None] = {}
    for row in rows:
        picks.setdefault(row["profile"], None)
        worst = _worst_drop(row)
        if _runnable(row) and row["median_ms"] <= budget_ms and worst is not None and worst <= max_drop:
            best = picks[row["profile"]]
            if best is None or row["median_ms"] < best["median_ms"]:
                picks[row["profile"]] = row
    return picks


def _worst_drop(row: dict) -> float | None:
    return row.get("drop_high") if row.get("drop_high") is not None else row.get("miou_drop")


def summarize_pick(picks: dict[str, Any], rows: list[dict], budget_ms: float, max_drop: float) -> str:
    """The answer in words; where nothing qualifies, which constraint nothing meets."""
    lines = []
    for profile, row in sorted(picks.items()):
        if row is not None:
            high = row.get("drop_high")
            interval = f", 95 % interval up to {high:+.2f}" if high is not None else ""
            lines.append(f"{profile}: ship {row['model']} {row['precision']} ({row.get('backend', '')}) — "
                         f"{row['median_ms']:.1f} ms, mIoU {100 * row['miou']:.2f}, drop {row['miou_drop']:+.2f}{interval} "
                         f"on {row.get('eval_images')} images")
            continue
        mine = [r for r in rows if r["profile"] == profile and _runnable(r)]
        fast = [r for r in mine if r["median_ms"] <= budget_ms]
        close = [r for r in mine if _worst_drop(r) is not None and _worst_drop(r) <= max_drop]
        if not fast:
            why = f"nothing runs under {budget_ms:g} ms" + (f" (fastest: {min(r['median_ms'] for r in mine):.1f} ms)" if mine else "")
            if not close:
                why += f", and nothing is within {max_drop:g} points"
        elif not close:
            why = f"nothing is within {max_drop:g} points at its interval's upper end"
        else:
            why = f"nothing is within {max_drop:g} points under {budget_ms:g} ms (each constraint alone is met)"
        lines.append(f"{profile}: {why}")
    return "\n".join(lines)


def palette(classes: int) -> np.ndarray:
    """PASCAL VOC's colour map (class i's bits spread over R, G and B): distinct, deterministic, any length;
    class 0 is black. A classes×3 uint8 array."""
    colours = np.zeros((max(classes, 1), 3), np.uint8)
    for i in range(len(colours)):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[i] = (r, g, b)
    return colours

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
    ("profile", "profile"), ("backend", "backend"), ("model", "model"), ("precision", "precision"), ("size", "size"),
    ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("fps", "FPS"), ("e2e_ms", "end to end ms @ camera"), ("miou", "mIoU"),
    ("miou_drop", "drop [95 % interval]"), ("eval_images", "images"), ("data", "scored on"), ("argmax_agreement", "agree %"), ("peak_rss_mb", "peak MB"), ("status", "status"),
    ("pareto", "Pareto"), ("cpu", "machine"),
)


def _ran(row: dict) -> bool:
    """A row timed at batch 1: the latency a deployment decision compares (batch rows report throughput)."""
    return row.get("status") in ("ok", "drop", "uncertain") and row.get("median_ms") is not None and (row.get("batch") or 1) == 1


def _runnable(row: dict) -> bool:
    """A row timed at batch 1 that has an mIoU to be judged by."""
    return _ran(row) and row.get("miou") is not None


def _unscored(rows: list[dict], profile: str | None = None, budget_ms: float | None = None) -> list[dict]:
    """Rows that were timed but hold no mIoU (of ``profile``, under ``budget_ms``, when given): evaluation masks that
    label no pixel give a NaN score, which the store keeps as NULL. They are never picked or plotted, and every
    answer that leaves them out says so, so a 0.2 ms row is never reported as slow."""
    return [r for r in rows if _ran(r) and r.get("miou") is None and (profile is None or r.get("profile") == profile)
            and (budget_ms is None or r["median_ms"] <= budget_ms)]


def _count(rows: list[dict]) -> str:
    return f"{len(rows)} row{'' if len(rows) == 1 else 's'}"


def _nothing_scored(blind: list[dict], budget_ms: float) -> str:
    one = len(blind) == 1
    return (f"nothing to pick under {budget_ms:g} ms by accuracy: {_count(blind)} {'runs' if one else 'run'} under it (fastest "
            f"{min(r['median_ms'] for r in blind):.3g} ms) but {'has' if one else 'have'} no mIoU score: the evaluation "
            f"masks label no pixel (all void?); score on data with labelled pixels")


def _left_out(blind: list[dict], budget_ms: float) -> str:
    has = "has" if len(blind) == 1 else "have"
    return f" ({_count(blind)} under {budget_ms:g} ms {has} no mIoU score, left out)" if blind else ""


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
        "profile": row["profile"], "backend": row.get("backend") or "", "model": row["model"], "precision": row["precision"],
        "size": ("" if row.get("height") is None or row.get("width") is None else f"{row['height']}x{row['width']}")
                + (f" ×{row['batch']}" if (row.get("batch") or 1) > 1 else ""),
        "median_ms": fmt(row.get("median_ms"), ".1f"), "p90_ms": fmt(row.get("p90_ms"), ".1f"),
        "fps": fmt(row.get("fps"), ".2f"),
        "e2e_ms": fmt(row.get("e2e_ms"), ".1f") + (f" @ {row['camera']}" if row.get("e2e_ms") is not None and row.get("camera") else ""),
        "miou": fmt(None if row.get("miou") is None else 100 * row["miou"], ".2f"),
        "miou_drop": fmt(row.get("miou_drop"), "+.2f") + (
            f" [{row['drop_low']:+.2f}, {row['drop_high']:+.2f}]"
            if row.get("miou_drop") is not None and _finite(row.get("drop_low")) and _finite(row.get("drop_high")) else ""),
        "eval_images": "" if row.get("eval_images") is None else str(row["eval_images"]),
        # the data and, where recorded, its files' fingerprint: two rows on one path but other files differ here
        "data": (row.get("data") or "") + (f" #{row['data_fingerprint'][:8]}" if row.get("data_fingerprint") else ""),
        "argmax_agreement": fmt(None if row.get("argmax_agreement") is None else 100 * row["argmax_agreement"], ".2f"),
        "peak_rss_mb": fmt(row.get("peak_rss_mb"), ".0f"),
        "status": STATUS_MARK.get(row.get("status"), "?")
                  + (f" uncertain: {row.get('eval_images')} images" if row.get("status") == "uncertain" and row.get("miou") is not None else "")
                  + (" no mIoU score: the evaluation masks label no pixel (all void?)"
                     if row.get("status") in ("ok", "drop", "uncertain") and row.get("miou") is None else "") + (" smoke (--quick: 3 runs, not figures to quote)" if row.get("quick") else "")
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


# Okabe–Ito colours (told apart with any colour vision) and a distinct marker per precision
PRECISION_STYLE = {
    "fp32": ("#0072B2", "o"),  # blue, circle
    "fp16": ("#E69F00", "s"),  # orange, square
    "bf16": ("#009E73", "D"),  # bluish green, diamond
    "int8": ("#D55E00", "^"),  # vermillion, triangle
}
OTHER_STYLE = ("#CC79A7", "X")  # reddish purple, cross: any other precision
FRONT_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))  # one per profile's Pareto front


def _drop(row: dict) -> float:
    """The row's mIoU drop in points against the FP32 reference (positive = worse)."""
    if row.get("miou_drop") is not None:
        return float(row["miou_drop"])
    if row.get("reference_miou") is not None:
        return 100 * (row["reference_miou"] - row["miou"])
    return 0.0


def _finite(value) -> bool:
    return value is not None and abs(value) != float("inf") and value == value


def _latency_axis(ax, latencies: list[float]) -> None:
    """A linear axis when the latencies span under 10×, else a log axis labelled with plain numbers at major
    ticks only (1-2-5 steps, or fewer per decade over a wide range), so labels never run into each other."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    low, high = min(latencies), max(latencies)
    plain = FuncFormatter(lambda v, _: f"{v:.0f}" if v >= 1 and v == round(v) else f"{v:g}")
    if high < 10 * low:
        pad = max(0.08 * (high - low), 0.02 * high, 1e-3)
        ax.set_xlim(max(0.0, low - pad), high + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("median latency, batch 1 (ms)")
        return
    ax.set_xscale("log")
    ax.set_xlim(low / 1.4, high * 1.4)
    decades = np.log10(high / low)
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("median latency, batch 1 (ms, log scale)")


def pareto_figure(rows: list[dict]):
    """The latency-vs-mIoU-drop figure (a matplotlib Figure): x the median latency at batch 1, y the mIoU drop in
    points against FP32 with its 95 % interval as error bars, the tolerance shaded from 0 up, each profile's Pareto
    front joined by a line. The caller closes it (``pareto_plot`` saves and closes)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegedgeError("plots need matplotlib (a segedge dependency): pip install matplotlib") from None

    blind = _unscored(rows)
    rows = mark_pareto(sorted((r for r in rows if _runnable(r)), key=lambda r: tuple(
        str(r.get(k)) for k in ("profile", "model", "backend", "precision"))))  # the same figure whatever the rows' order
    if not rows and blind:
        raise SegedgeError(f"no row has an mIoU score to plot: {_count(blind)} ran (fastest "
                           f"{min(r['median_ms'] for r in blind):.3g} ms) but the evaluation masks label no pixel (all "
                           f"void?); score on data with labelled pixels")
    if not rows:
        raise SegedgeError("no successful measurements to plot; run `segedge bench` first")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ys: list[float] = []
    labels: list[tuple[float, float, str]] = []
    # the tolerance, shaded from 0 up: one grey band when every precision allows the same, else one band per
    # distinct tolerance, edged by a dotted line in its precision's colour (grey where several share it)
    by_tolerance: dict[float, list[str]] = defaultdict(list)
    for r in rows:
        if _finite(r.get("tolerance")) and r["tolerance"] > 0 and r["precision"] not in by_tolerance[float(r["tolerance"])]:
            by_tolerance[float(r["tolerance"])].append(r["precision"])
    for tol, precisions in sorted(by_tolerance.items(), reverse=True):
        points = f"{tol:g} point{'' if tol == 1 else 's'}"
        if len(by_tolerance) == 1:
            ax.axhspan(0, tol, color="#999999", alpha=0.18, lw=0, label=f"tolerance: drop ≤ {points}")
        else:
            colour = PRECISION_STYLE.get(precisions[0], OTHER_STYLE)[0] if len(precisions) == 1 else "#777777"
            ax.axhspan(0, tol, color=colour, alpha=0.08, lw=0)
            ax.axhline(tol, color=colour, ls=":", lw=1.2, label=f"{', '.join(precisions)} tolerance: ≤ {points}")
        ys.append(tol)
    ax.axhline(0, color="black", lw=0.8)
    shown: set[str] = set()
    for r in rows:
        x, y = r["median_ms"], _drop(r)
        colour, marker = PRECISION_STYLE.get(r["precision"], OTHER_STYLE)
        low, high = r.get("drop_low"), r.get("drop_high")
        if _finite(low) and _finite(high):
            ax.errorbar(x, y, yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], fmt="none", ecolor=colour, alpha=0.7,
                        capsize=3, lw=1.2, zorder=2)
            ys += [low, high]
        ys.append(y)
        label = None if r["precision"] in shown else r["precision"]
        shown.add(r["precision"])
        ax.scatter(x, y, marker=marker, s=60, color=colour, edgecolors="black", linewidths=0.6, zorder=3, label=label)
        text = " · ".join(str(part) for part in (r["model"], r.get("backend") or "?", r["precision"]))
        labels.append((x, y, text + (" (quick)" if r.get("quick") else "")))
    for i, profile in enumerate(sorted({r["profile"] for r in rows})):
        front = sorted((r for r in rows if r["profile"] == profile and r["pareto"]), key=lambda r: r["median_ms"])
        ax.plot([r["median_ms"] for r in front], [_drop(r) for r in front], color="#444444", lw=1,
                ls=FRONT_STYLES[i % len(FRONT_STYLES)], zorder=1, label=f"{profile} Pareto front")
    _latency_axis(ax, [r["median_ms"] for r in rows])
    # never zoom in so far that a fraction of a point looks like a cliff: at least ±1 point around 0
    bottom, top = min(min(ys), -1.0), max(max(ys), 1.0)
    pad = 0.08 * (top - bottom)
    ax.set_ylim(bottom - pad, top + pad)
    data = sorted({str(r.get("data") or "synthetic") for r in rows})
    ax.set_ylabel(f"mIoU drop vs FP32 on {', '.join(data)} val (points)\nlower is better; bars: 95 % interval")
    ax.set_title("latency vs mIoU drop" + (f" ({_count(blind)} with no mIoU score not shown)" if blind else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _place_labels(fig, ax, labels)
    return fig


def _place_labels(fig, ax, labels: list[tuple[float, float, str]], fontsize: int = 7) -> None:
    """Label each point without overlapping another label: each takes the first of a ladder of offsets (right,
    then alternately above and below, further each time) whose box meets no box placed before it; a label moved
    away from its point gets a thin leader line."""
    from matplotlib.text import Text

    fig.canvas.draw()  # the final limits and scales, so data coordinates map to pixels as they will be drawn
    renderer = fig.canvas.get_renderer()
    placed: list = []
    ladder = [(5, 4)] + [(5, 4 + sign * step * 11) for step in range(1, 12) for sign in (1, -1)]
    for x, y, text in sorted(labels, key=lambda item: (item[0], item[1])):
        for dx, dy in ladder:
            note = ax.annotate(text, (x, y), fontsize=fontsize, xytext=(dx, dy), textcoords="offset points",
                               arrowprops=None if dy == 4 else {"arrowstyle": "-", "lw": 0.5, "color": "#777777"})
            box = Text.get_window_extent(note, renderer).expanded(1.02, 1.1)  # the text alone, not its leader line
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            note.remove()
        else:  # nowhere free within the ladder: keep the first place rather than drop the label
            note = ax.annotate(text, (x, y), fontsize=fontsize, xytext=(5, 4), textcoords="offset points")
            placed.append(Text.get_window_extent(note, renderer))


def pareto_plot(rows: list[dict], path: str | Path) -> Path:
    """Save :func:`pareto_figure` as a PNG, atomically."""
    from segedge.core.artifacts import atomic_path

    fig = pareto_figure(rows)
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
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


def summarize_budget(picks: dict[str, Any], budget_ms: float, rows: list[dict] | None = None) -> str:
    """The pick in words; ``rows`` (those picked from) lets it name the rows under the budget that have no score."""
    lines = []
    for profile, row in sorted(picks.items()):
        blind = _unscored(rows or [], profile, budget_ms)
        if row is None:
            lines.append(f"{profile}: " + (_nothing_scored(blind, budget_ms) if blind else f"nothing measured runs under {budget_ms:g} ms"))
        else:
            drop = "" if row.get("miou_drop") is None else f" (drop {row['miou_drop']:+.2f})"
            lines.append(f"{profile}: ship {row['model']} {row['precision']} — {row['median_ms']:.1f} ms, "
                         f"mIoU {100 * row['miou']:.2f}{drop}{_left_out(blind, budget_ms)}")
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
        blind = _unscored(rows, profile, budget_ms)
        if row is not None:
            high = row.get("drop_high")
            interval = f", 95 % interval up to {high:+.2f}" if high is not None else ""
            lines.append(f"{profile}: ship {row['model']} {row['precision']} ({row.get('backend', '')}) — "
                         f"{row['median_ms']:.1f} ms, mIoU {100 * row['miou']:.2f}, drop {row['miou_drop']:+.2f}{interval} "
                         f"on {row.get('eval_images')} images{_left_out(blind, budget_ms)}")
            continue
        mine = [r for r in rows if r["profile"] == profile and _runnable(r)]
        fast = [r for r in mine if r["median_ms"] <= budget_ms]
        close = [r for r in mine if _worst_drop(r) is not None and _worst_drop(r) <= max_drop]
        if blind and not fast:
            why = _nothing_scored(blind, budget_ms) + (
                f"; the fastest row with a score takes {min(r['median_ms'] for r in mine):.1f} ms" if mine else "")
        elif not fast:
            why = f"nothing runs under {budget_ms:g} ms" + (f" (fastest: {min(r['median_ms'] for r in mine):.1f} ms)" if mine else "")
            if not close:
                why += f", and nothing is within {max_drop:g} points"
        elif not close:
            why = f"nothing is within {max_drop:g} points at its interval's upper end"
        else:
            why = f"nothing is within {max_drop:g} points under {budget_ms:g} ms (each constraint alone is met)"
        lines.append(f"{profile}: {why}" + (_left_out(blind, budget_ms) if fast else ""))
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

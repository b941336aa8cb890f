import json

import pytest

from segedge.flows.report import mark_pareto, pareto_plot, pick_under_budget, render


def row(model, precision, ms, miou, status="ok", profile="cpu"):
    return dict(profile=profile, machine_id="m", backend="onnxruntime", model=model, precision=precision, height=64, width=128,
                median_ms=ms, p90_ms=ms, fps=1000 / ms if ms else None, miou=miou, miou_drop=0.0,
                argmax_agreement=1.0, peak_rss_mb=100.0, status=status, reason=None, machine=json.dumps({"cpu": "X", "cores": 2}))


ROWS = [
    row("a", "fp32", 100.0, 0.60),
    row("a", "int8", 40.0, 0.59),  # faster, slightly worse: on the front
    row("b", "fp32", 120.0, 0.55),  # slower and worse than a fp32: dominated
    row("c", "int8", 30.0, 0.40),  # fastest: on the front
    row("d", "int8", None, None, status="failed"),
]


def test_pareto_front():
    marked = {(r["model"], r["precision"]): r["pareto"] for r in mark_pareto([dict(r) for r in ROWS])}
    assert marked == {("a", "fp32"): True, ("a", "int8"): True, ("b", "fp32"): False, ("c", "int8"): True, ("d", "int8"): False}


def test_budget_pick_is_the_most_accurate_under_budget():
    assert pick_under_budget(ROWS, 50.0)["cpu"]["model"] == "a"
    assert pick_under_budget(ROWS, 35.0)["cpu"]["model"] == "c"
    assert pick_under_budget(ROWS, 10.0)["cpu"] is None


def test_markdown_marks_status_and_front():
    md = render([dict(r) for r in ROWS], "md")
    assert md.count("★") == 3
    assert md.startswith("| profile | backend | model | precision |")
    assert "| cpu | onnxruntime | d | int8 | 64x128 |" in md and "❌" in md
    assert "✅" in md


def test_csv_and_json_carry_the_same_rows():
    csv_text = render([dict(r) for r in ROWS], "csv")
    assert len(csv_text.strip().splitlines()) == 1 + len(ROWS)
    assert csv_text.startswith("profile,backend,model,precision,")
    data = json.loads(render([dict(r) for r in ROWS], "json"))
    assert [r["model"] for r in data] == ["a", "a", "b", "c", "d"]
    assert data[0]["machine"]["cpu"] == "X"


def test_plot_is_a_png_with_one_panel_of_points(tmp_path):
    import numpy as np
    from PIL import Image

    from figure_checks import png_panels

    path = pareto_plot([dict(r) for r in ROWS], tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, panels = png_panels(path)
    assert width > height > 300 and panels >= 1
    colours = np.unique(np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # markers, a front line and labels were drawn, not an empty frame

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


# rows with no score: evaluation masks that label no pixel give an mIoU of NaN, which SQLite stores as NULL ---------


def _void_store(path, scored_ms=None):
    """A store as bench writes it when every evaluation pixel is void: the mIoU and drop NaN (read back as None), the
    interval unbounded; with ``scored_ms``, one ordinary scored row beside them."""
    from segedge.core.results import ResultsStore

    nan, inf = float("nan"), float("inf")
    with ResultsStore(path) as store:
        for precision, ms in (("fp32", 0.4), ("int8", 0.2)):
            store.add(dict(machine_id="m", machine={"cpu": "X", "cores": 2}, profile="cpu", backend="onnxruntime", model="unet",
                           precision=precision, height=64, width=128, batch=1, status="uncertain", median_ms=ms, miou=nan,
                           reference_miou=nan, miou_drop=nan, drop_low=-inf, drop_high=inf, argmax_agreement=1.0,
                           eval_images=4, tolerance=1.0))
        if scored_ms is not None:
            store.add(dict(machine_id="m", machine={"cpu": "X", "cores": 2}, profile="cpu", backend="onnxruntime", model="bisenet",
                           precision="fp32", height=64, width=128, batch=1, status="ok", median_ms=scored_ms, miou=0.5,
                           reference_miou=0.5, miou_drop=0.0, drop_low=-0.1, drop_high=0.1, eval_images=4, tolerance=1.0))
    with ResultsStore(path, read_only=True) as store:
        return store.latest_rows()


def test_rows_without_a_score_are_named_so_not_taken_for_slow_ones(tmp_path):
    """All-void masks used to give "nothing measured runs under 100 ms" for a 0.2 ms row, "no successful measurements"
    for the plot, and a ❔ that asked for more images."""
    from segedge.core.errors import SegedgeError
    from segedge.flows.report import pick_fastest_within, summarize_budget, summarize_pick

    rows = _void_store(tmp_path / "r.sqlite")
    assert all(r["miou"] is None for r in rows)
    md = render([dict(r) for r in rows], "md")
    assert md.count("no mIoU score") == 2 and "nan" not in md and "uncertain: 4 images" not in md
    budget = summarize_budget(pick_under_budget(rows, 100.0), 100.0, rows)
    assert budget.startswith("cpu: nothing to pick under 100 ms by accuracy: 2 rows run under it (fastest 0.2 ms) but have no mIoU score")
    assert "runs under 100 ms" not in budget.replace("run under it", "")
    both = summarize_pick(pick_fastest_within(rows, 100.0, 1.0), rows, 100.0, 1.0)
    assert both.startswith("cpu: nothing to pick under 100 ms by accuracy: 2 rows run under it") and "nothing runs under" not in both
    with pytest.raises(SegedgeError) as err:
        pareto_plot(rows, tmp_path / "p.png")
    assert "no row has an mIoU score to plot: 2 rows ran (fastest 0.2 ms)" in str(err.value)
    assert "run `segedge bench` first" not in str(err.value)


def test_a_pick_says_which_faster_rows_had_no_score(tmp_path):
    from segedge.flows.report import pick_fastest_within, summarize_budget, summarize_pick

    rows = _void_store(tmp_path / "r.sqlite", scored_ms=50.0)
    budget = summarize_budget(pick_under_budget(rows, 100.0), 100.0, rows)
    assert budget.startswith("cpu: ship bisenet fp32") and budget.endswith("(2 rows under 100 ms have no mIoU score, left out)")
    both = summarize_pick(pick_fastest_within(rows, 100.0, 1.0), rows, 100.0, 1.0)
    assert both.startswith("cpu: ship bisenet fp32") and both.endswith("(2 rows under 100 ms have no mIoU score, left out)")
    assert summarize_budget(pick_under_budget(rows, 1.0), 1.0, rows).startswith(
        "cpu: nothing to pick under 1 ms by accuracy: 2 rows run under it")


def test_cli_and_html_say_the_rows_have_no_score(tmp_path, capsys):
    from segedge.cli.main import main
    from segedge.flows.html_report import build_html

    rows = _void_store(tmp_path / "r.sqlite")
    assert main(["report", "--results", str(tmp_path / "r.sqlite"), "--budget-ms", "100"]) == 0
    out = capsys.readouterr().out
    assert "cpu: nothing to pick under 100 ms by accuracy: 2 rows run under it" in out and "nothing measured" not in out
    page = build_html(rows, budget_ms=100.0)
    assert "nothing to pick under 100 ms by accuracy" in page and "No plot: no row has an mIoU score to plot" in page

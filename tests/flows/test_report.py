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


# the drop's interval on the figure: a plot that lost its bars once went unnoticed ---------------------------------


def _interval_rows():
    """Two rows whose intervals reach well beyond their markers on both sides (so a bar is told from a marker)."""
    rows = [row("a", "fp32", 20.0, 0.60), row("b", "int8", 60.0, 0.58)]
    for r, (drop, low, high) in zip(rows, ((0.1, -0.8, 0.9), (1.2, 0.2, 2.4))):
        r.update(miou_drop=drop, drop_low=low, drop_high=high, tolerance=1.0, eval_images=8)
    return rows


def _vertical_segments(ax):
    """Every vertical segment drawn on ``ax`` as (x, low, high), from line collections (errorbar's bars) and lines."""
    from matplotlib.collections import LineCollection

    segments = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    segments += [line.get_xydata() for line in ax.lines]
    return [(float(s[0][0]), float(min(s[0][1], s[-1][1])), float(max(s[0][1], s[-1][1])))
            for s in segments if len(s) == 2 and s[0][0] == s[-1][0]]


def test_the_figure_draws_each_rows_drop_interval():
    import matplotlib.pyplot as plt

    from segedge.flows.report import pareto_figure

    rows = _interval_rows()
    fig = pareto_figure([dict(r) for r in rows])
    try:
        segments = _vertical_segments(fig.axes[0])
        for r in rows:
            assert any(x == pytest.approx(r["median_ms"]) and low == pytest.approx(r["drop_low"])
                       and high == pytest.approx(r["drop_high"]) for x, low, high in segments), (r["model"], segments)
    finally:
        plt.close(fig)


def test_the_html_page_shows_each_rows_drop_interval():
    """The page's table gives both ends, and its embedded plot has a bar in the row's colour from one end to the other:
    found in the PNG's pixels where the figure's own transform puts the interval's ends."""
    import base64
    import io

    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from segedge.flows.html_report import build_html
    from segedge.flows.report import pareto_figure

    rows = _interval_rows()
    page = build_html([dict(r) for r in rows])
    assert "+0.10 [-0.80, +0.90]" in page and "+1.20 [+0.20, +2.40]" in page
    src = page.split('id="pareto"', 1)[1].split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB")).astype(int)
    coloured = (png.max(axis=2) - png.min(axis=2)) > 60  # the precisions' colours; text, grid, band and front are grey

    dpi = 110  # what pareto_plot saves at, with bbox_inches="tight" and matplotlib's default 0.1 inch pad
    fig = pareto_figure([dict(r) for r in rows])
    try:
        fig.set_dpi(dpi)
        fig.canvas.draw()
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
        assert abs(png.shape[1] - box.width * dpi) <= 2 and abs(png.shape[0] - box.height * dpi) <= 2
        to_pixel = lambda x, y: (fig.axes[0].transData.transform((x, y)) - (box.x0 * dpi, 0)) * (1, -1) + (0, box.y1 * dpi)  # noqa: E731
        for r in rows:
            x, top = to_pixel(r["median_ms"], r["drop_high"])
            _, bottom = to_pixel(r["median_ms"], r["drop_low"])
            _, centre = to_pixel(r["median_ms"], r["miou_drop"])
            column = coloured[:, int(round(x)) - 1:int(round(x)) + 2].any(axis=1)
            near = np.nonzero(column[int(top) - 15:int(bottom) + 16])[0] + int(top) - 15
            assert column[int(round(centre))] and len(near), r["model"]  # the marker, at least
            start, end = near.min(), near.max()  # a marker alone spans a dozen pixels; the bar reaches both ends
            assert abs(start - top) <= 3 and abs(end - bottom) <= 3, (r["model"], (start, end), (top, bottom))
            assert column[int(top):int(bottom)].mean() > 0.9  # drawn all the way (the zero line and marker edge cross it)
    finally:
        plt.close(fig)

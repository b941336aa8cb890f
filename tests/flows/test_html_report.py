"""`segedge report --html`: one self-contained page (nothing fetched at view time), a table sorted by clicking its
headers, the Pareto figure and overlays embedded, the budget pick, written atomically; and the figure itself:
readable latency ticks at any range, the y axis the mIoU drop with a floor on its zoom. The browser tests open the
page in a real headless Chromium and skip, saying why, where selenium, chromium or chromedriver is missing."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from segedge.cli.main import main
from segedge.core.errors import SegedgeError
from segedge.flows.html_report import build_html, write_html
from segedge.flows.report import PRECISION_STYLE, pareto_figure, pareto_plot

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "arch": "x86_64", "os": "Linux-test", "gpus": [],
           "versions": {"python": "3.11.7", "numpy": "1.26.4", "onnxruntime": "1.20.1", "segedge": "0.4.0", "onnx": "1.17.0"}}


def row(model, precision, ms, drop, *, low=None, high=None, status="ok", backend="onnxruntime", tolerance=1.0, **extra):
    ok = status != "failed"
    return dict(profile="cpu", machine_id="m1", backend=backend, model=model, precision=precision, height=64, width=128,
                median_ms=ms if ok else None, p90_ms=ms * 1.1 if ok else None, p99_ms=ms * 1.2 if ok else None,
                fps=1000 / ms if ok else None, miou=0.60 - drop / 100 if ok else None, miou_drop=drop if ok else None,
                drop_low=low, drop_high=high, tolerance=tolerance, eval_images=8 if ok else None, argmax_agreement=0.99,
                peak_rss_mb=100.0, status=status, reason=extra.pop("reason", None), machine=json.dumps(MACHINE), **extra)


def rows():
    return [
        row("alpha", "fp32", 120.0, 0.0, low=-0.05, high=0.05),
        row("alpha", "int8", 40.0, 0.4, low=0.1, high=0.8),
        row("beta", "fp16", 9.5, 0.9, low=0.5, high=1.3),
        row("gamma", "bf16", 300.0, 2.5, low=1.5, high=3.4, status="drop"),
        row("delta", "int8", 0.0, 0.0, status="failed", reason="onnxruntime refused the graph"),
    ]


class Page(HTMLParser):
    """The bits of the page the plain tests look at: resource attributes, table body rows, images."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.resources: list[str] = []
        self.body_rows: list[list[str]] = []
        self.images: list[dict] = []
        self.ids: set[str] = set()
        self._in_body = self._in_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.resources += [v or "" for k, v in attrs.items() if k in ("src", "href", "action", "srcset", "poster", "data")]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.body_rows.append([])
        elif tag == "td" and self._in_body:
            self._in_cell = True
            self.body_rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.body_rows[-1][-1] += data


def png_pixels(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def fake_overlays(monkeypatch):
    """Overlays without an export: one real PNG in place of what ``write_overlays`` renders from an artifact."""
    import segedge.flows.html_report as html_report

    def write(rows, folder):
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / "alpha-int8-abc.png"
        Image.new("RGB", (400, 100), (200, 30, 30)).save(path)
        return [path]

    monkeypatch.setattr(html_report, "write_overlays", write)


# the page, without a browser ------------------------------------------------------------------------------------


def test_page_is_self_contained(tmp_path):
    text = write_html(rows(), tmp_path / "r.html", budget_ms=50).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    page = Page(text)
    assert page.resources and all(v.startswith(("data:", "#")) for v in page.resources), page.resources
    assert "<style>" in text and "<script>" in text and not re.search(r"<(script|link)[^>]+(src|href)=", text)


def test_table_holds_every_row_with_the_asked_columns(tmp_path):
    page = Page(build_html(rows()))
    assert len(page.body_rows) == 5
    assert sorted(r[2] for r in page.body_rows) == ["alpha", "alpha", "beta", "delta", "gamma"]
    text = build_html(rows())
    for title in ("profile", "backend", "model", "precision", "size", "median ms", "p90 ms", "p99 ms", "FPS", "mIoU",
                  "drop [95 % interval]", "images", "scored on", "status"):
        assert f'<button type="button">{title}</button>' in text
    int8 = next(r for r in page.body_rows if r[2] == "alpha" and r[3] == "int8")
    assert int8[:5] == ["cpu", "onnxruntime", "alpha", "int8", "64x128"]
    assert "+0.40 [+0.10, +0.80]" in int8 and "✅" in int8[13]
    failed = next(r for r in page.body_rows if r[2] == "delta")
    assert "❌" in failed[13] and "onnxruntime refused the graph" in failed[13]


def test_machine_and_tool_versions_are_named():
    text = build_html(rows())
    for fact in ("Test CPU 9000 (2 cores)", "x86_64", "python", "3.11.7", "numpy", "1.26.4", "onnxruntime", "1.20.1",
                 "segedge", "0.4.0", "onnx", "1.17.0"):
        assert fact in text
    bare = [dict(r, machine=json.dumps({"cpu": "Y", "cores": 4})) for r in rows()]
    assert "not recorded" in build_html(bare)  # a row without versions says so instead of leaving them out


def test_budget_pick_appears_when_asked():
    assert 'id="pick"' not in build_html(rows())
    page_text = build_html(rows(), budget_ms=50)
    assert 'id="pick"' in page_text and "cpu: ship alpha int8" in page_text  # the most accurate under 50 ms
    assert page_text.count('class="picked"') == 1
    both = build_html(rows(), budget_ms=50, max_drop=1.5)
    assert "cpu: ship beta fp16 (onnxruntime)" in both  # the fastest whose interval stays within 1.5 points
    none = build_html(rows(), budget_ms=5, max_drop=1.5)
    assert "cpu: nothing runs under 5 ms" in none
    with pytest.raises(SegedgeError, match="--budget-ms"):
        build_html(rows(), max_drop=0.5)


def test_plot_embedded_is_the_pareto_png(tmp_path):
    page = Page(build_html(rows()))
    plot = next(i for i in page.images if i.get("id") == "pareto")
    assert plot["src"].startswith("data:image/png;base64,")
    embedded = png_pixels(base64.b64decode(plot["src"].split(",", 1)[1]))
    alone = png_pixels(pareto_plot(rows(), tmp_path / "p.png").read_bytes())
    assert embedded.shape == alone.shape and (embedded == alone).all()  # the same figure as --plot writes


def test_all_failed_rows_still_make_a_page_without_a_plot():
    page = Page(build_html([row("delta", "int8", 0.0, 0.0, status="failed")]))
    assert "pareto-missing" in page.ids and len(page.body_rows) == 1


def test_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    write_html(rows(), target)
    good = target.read_text(encoding="utf-8")
    with pytest.raises(SegedgeError, match="no rows"):
        write_html([], target)
    assert target.read_text(encoding="utf-8") == good

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:100])
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(SegedgeError, match="No space left"):
        patch.setattr(Path, "write_text", half_then_fail)
        write_html(rows(), target)
    assert target.read_text(encoding="utf-8") == good
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left behind


def test_overlays_are_embedded(monkeypatch):
    fake_overlays(monkeypatch)
    page = Page(build_html(rows()))
    overlays = [i for i in page.images if i.get("class") == "overlay"]
    assert len(overlays) == 1 and png_pixels(base64.b64decode(overlays[0]["src"].split(",", 1)[1])).shape == (100, 400, 3)


# the figure -------------------------------------------------------------------------------------------------------


def _tick_labels(fig):
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    renderer = fig.canvas.get_renderer()
    ticks = [(t.get_loc(), t.label1) for t in ax.xaxis.get_major_ticks()]
    labels = [label for loc, label in ticks if low <= loc <= high and label.get_visible() and label.get_text()]
    minor = [t.label1.get_text() for t in ax.xaxis.get_minor_ticks() if t.label1.get_visible()]
    return ax, labels, [label.get_window_extent(renderer) for label in labels], minor


@pytest.mark.parametrize("latencies, scale", [((3.0, 9.0, 30.0, 300.0, 3000.0), "log"), ((40.0, 42.0, 43.5, 45.0), "linear"),
                                              ((0.2, 5.0, 90000.0), "log")])
def test_latency_ticks_are_plain_numbers_that_never_overlap(latencies, scale):
    import matplotlib.pyplot as plt

    figure_rows = [row(f"m{i}", ("fp32", "int8")[i % 2], ms, 0.1 * i) for i, ms in enumerate(latencies)]
    fig = pareto_figure(figure_rows)
    try:
        ax, labels, boxes, minor = _tick_labels(fig)
        assert ax.get_xscale() == scale
        assert len(labels) >= 3
        for label in labels:
            float(label.get_text().replace("−", "-"))  # plain numbers: no 10^n, no mathtext
        assert not any(minor)
        boxes = sorted(boxes, key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [label.get_text() for label in labels]
        low, high = ax.get_xlim()
        assert low < min(latencies) and high > max(latencies)
    finally:
        plt.close(fig)


def test_point_labels_never_overlap_even_when_points_crowd():
    """Six rows within a few ms and a tenth of a point of each other: every label is drawn, none overlaps another."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    crowd = [row("bisenet", precision, ms, drop, backend=backend) for precision, ms, drop, backend in (
        ("fp32", 281.8, 0.0, "onnxruntime"), ("fp32", 286.8, 0.0, "openvino"), ("fp16", 307.5, 0.0, "onnxruntime"),
        ("int8", 97.9, -0.04, "onnxruntime"), ("int8", 92.9, -0.03, "openvino"), ("bf16", 151.7, 0.03, "openvino"))]
    fig = pareto_figure(crowd)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        notes = [t for t in ax.texts if " · " in t.get_text()]
        assert len(notes) == len(crowd)
        boxes = [Text.get_window_extent(t, renderer) for t in notes]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), [t.get_text() for t in notes]
    finally:
        plt.close(fig)


def test_y_axis_is_the_drop_with_interval_band_and_a_sane_zoom():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    small = [row("a", "fp32", 50.0, 0.0, low=-0.02, high=0.02, tolerance=0.5),
             row("a", "int8", 20.0, 0.4, low=0.3, high=0.45, tolerance=0.5)]
    fig = pareto_figure(small)
    try:
        ax = fig.axes[0]
        bottom, top = ax.get_ylim()
        assert bottom <= -1 and top >= 1  # a 0.4-point drop does not fill the height like a cliff
        assert "drop" in ax.get_ylabel()
        bands = [p for p in ax.patches if isinstance(p, (Polygon, Rectangle)) and p.get_alpha()]
        assert bands  # the shaded tolerance
        texts = [t.get_text() for t in ax.texts]
        assert "a · onnxruntime · int8" in texts and "a · onnxruntime · fp32" in texts
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("tolerance" in t and "0.5" in t for t in legend)
    finally:
        plt.close(fig)
    mixed = rows()[:3] + [row("gamma", "bf16", 300.0, 2.5, low=1.5, high=3.4, tolerance=3.0)]
    fig = pareto_figure(mixed)
    try:
        ax = fig.axes[0]
        assert ax.get_ylim()[1] >= 3.4  # the widest interval and the loosest tolerance fit
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sum("tolerance" in t for t in legend) == 2  # per precision when they differ
    finally:
        plt.close(fig)


def test_precisions_get_distinct_colour_blind_safe_styles():
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    styles = [PRECISION_STYLE[p] for p in ("fp32", "fp16", "bf16", "int8")]
    assert {c for c, _ in styles} <= okabe_ito
    assert len({c for c, _ in styles}) == 4 and len({m for _, m in styles}) == 4


# the command line -----------------------------------------------------------------------------------------------


def _store(path: Path, hand_rows) -> Path:
    from segedge.core.results import ResultsStore

    with ResultsStore(path) as store:
        for r in hand_rows:
            store.add(r)
    return path


def test_cli_writes_the_page_and_refuses_mistakes_in_one_line(tmp_path, capsys):
    store = _store(tmp_path / "r.sqlite", rows())
    code = main(["report", "--results", str(store), "--html", str(tmp_path / "report.html"), "--budget-ms", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| cpu | onnxruntime | alpha | fp32 |" in captured.out
    assert "cpu: ship alpha int8" in (tmp_path / "report.html").read_text(encoding="utf-8")
    for argv, message in ((["--html", str(tmp_path / "no" / "r.html")], "folder"),
                          (["--html", str(tmp_path)], "is a directory"),
                          (["--html", str(tmp_path / "x.html"), "--profile", "jetson"], "no rows for profile jetson")):
        assert main(["report", "--results", str(store), *argv]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()


def test_report_help_describes_html(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--html FILE" in out and "HTML report" in out and "sorted by clicking" in out


def test_bench_writes_the_page_beside_the_plot(tmp_path):
    from segedge.cli.bench import _figures

    store = _store(tmp_path / "export" / "results.sqlite", rows())
    _figures(store, "cpu", "m1")
    assert (tmp_path / "export" / "pareto-cpu.png").is_file()
    page = Page((tmp_path / "export" / "report-cpu.html").read_text(encoding="utf-8"))
    assert len(page.body_rows) == 5 and "pareto" in page.ids


# in a real browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real INT8 artifact (untrained, tiny) for overlays rendered from an export, as `segedge bench` makes them."""
    out = tmp_path_factory.mktemp("html-export")
    code = main(["export", "--model", "unet", "--untrained", "--width", "0.125", "--input-size", "64x128", "--int8",
                 "--calib-images", "4", "--eval-images", "2", "--out", str(out), "--quiet"])
    assert code == 0
    (manifest,) = out.glob("unet/*/manifest.json")
    return manifest.parent


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    driver_path = Path("/usr/bin/chromedriver") if Path("/usr/bin/chromedriver").is_file() else shutil.which("chromedriver")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not driver_path or not chromium:
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    try:  # an explicit driver path: Selenium Manager never looks for (or downloads) one
        driver = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium could not start: {exc.msg or exc}".splitlines()[0])
    yield driver
    driver.quit()


def _column(driver, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results tbody tr')).map(r => r.cells[arguments[0]].dataset.sort);", index)


def test_browser_sorts_by_clicked_header_and_shows_the_figures(browser, exported, tmp_path):
    from selenium.webdriver.common.by import By

    page_rows = rows() + [row("unet", "int8", 20.0, 0.3, low=0.1, high=0.5, artifact=str(exported / "model.int8.onnx"))]
    target = write_html(page_rows, tmp_path / "report.html", budget_ms=50)
    browser.get(target.as_uri())
    headers = browser.find_elements(By.CSS_SELECTOR, "#results thead th")
    titles = [h.text.strip() for h in headers]
    median = titles.index("median ms")
    before = _column(browser, median)
    numbers = lambda values: [float(v) for v in values if v]  # noqa: E731

    headers[median].click()
    ascending = _column(browser, median)
    assert ascending != before
    assert numbers(ascending) == sorted(numbers(ascending)) and ascending[-1] == ""  # numeric, failed row last
    assert numbers(ascending)[:2] == [9.5, 20.0]  # 9.5 before 20 and 120: not sorted as text
    assert headers[median].get_attribute("aria-sort") == "ascending"
    headers[median].click()
    descending = _column(browser, median)
    assert numbers(descending) == sorted(numbers(descending), reverse=True) and descending[-1] == ""
    assert headers[median].get_attribute("aria-sort") == "descending"

    precision = titles.index("precision")
    unsorted = _column(browser, precision)
    headers[precision].click()
    assert _column(browser, precision) == sorted(unsorted) != unsorted
    assert headers[median].get_attribute("aria-sort") is None

    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    plot = browser.find_element(By.ID, "pareto")
    assert browser.execute_script(loaded, plot) > 300
    overlays = browser.find_elements(By.CSS_SELECTOR, "img.overlay")
    assert len(overlays) == 1 and browser.execute_script(loaded, overlays[0]) > 300
    assert overlays[0].size["width"] > 100  # laid out on the page, not collapsed
    assert "cpu: ship" in browser.find_element(By.ID, "pick").text
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_each_models_class_names_are_shown_as_its_rows_recorded_them():
    named = [dict(r, classes=json.dumps(["background", "nucleus", "cytoplasm"])) if r["model"] == "alpha" else r
             for r in rows()]
    text = build_html(named)
    assert '<section id="classes">' in text and "<dt>alpha</dt><dd>background, nucleus, cytoplasm</dd>" in text
    assert '<section id="classes">' not in build_html(rows())  # rows that recorded none: no section

"""One self-contained HTML report of the results store: open it anywhere, offline, and decide.

Everything the page shows travels inside the file: inline CSS and JavaScript, the Pareto plot and the overlays
as base64 ``data:`` URIs, nothing fetched at view time. It holds the machines and tool versions the rows were
measured with, a table sortable by any column (click a header; click again to reverse), the latency-vs-mIoU-drop
figure (the same one ``segedge report --plot`` writes), the budget pick when a budget is given, and the
image | FP32 | reduced precision | disagreement overlays.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from segedge.core.errors import SegedgeError
from segedge.core.results import STATUS_MARK
from segedge.flows.report import (_cells, mark_pareto, pareto_plot, pick_fastest_within, pick_under_budget,
                                  summarize_budget, summarize_pick, write_overlays)

# versions every report names first (``not recorded`` when a row's machine lacks one); then whatever else rows hold
FIRST_VERSIONS = ("python", "numpy", "onnxruntime", "segedge")


def _number(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _ms(value) -> str:
    return "" if value is None else format(value, ".2f" if value < 10 else ".1f")


def _drop_text(row: dict) -> str:
    text = _number(row.get("miou_drop"), "+.2f")
    low, high = row.get("drop_low"), row.get("drop_high")
    if text and low is not None and high is not None and abs(high) != float("inf") and abs(low) != float("inf"):
        text += f" [{low:+.2f}, {high:+.2f}]"
    return text


def _size_key(row: dict) -> float | None:
    if row.get("height") is None or row.get("width") is None:
        return None
    return float(row["height"] * row["width"] * (row.get("batch") or 1))


def _status(row: dict) -> str:
    """The table's mark, then the status in words (a page may be read where no emoji font is installed)."""
    mark = STATUS_MARK.get(row.get("status"), "?")
    return f"{mark} {row.get('status') or 'unknown'}" + _cells(row)["status"][len(mark):]


# (title, kind, sort value, shown text): kind "num" sorts numerically, "text" alphabetically
Column = tuple[str, str, Callable[[dict], object], Callable[[dict], str]]
COLUMNS: tuple[Column, ...] = (
    ("profile", "text", lambda r: r.get("profile"), lambda r: str(r.get("profile") or "")),
    ("backend", "text", lambda r: r.get("backend"), lambda r: str(r.get("backend") or "")),
    ("model", "text", lambda r: r.get("model"), lambda r: str(r.get("model") or "")),
    ("precision", "text", lambda r: r.get("precision"), lambda r: str(r.get("precision") or "")),
    ("size", "num", _size_key, lambda r: _cells(r)["size"]),
    ("median ms", "num", lambda r: r.get("median_ms"), lambda r: _ms(r.get("median_ms"))),
    ("p90 ms", "num", lambda r: r.get("p90_ms"), lambda r: _ms(r.get("p90_ms"))),
    ("p99 ms", "num", lambda r: r.get("p99_ms"), lambda r: _ms(r.get("p99_ms"))),
    ("FPS", "num", lambda r: r.get("fps"), lambda r: _number(r.get("fps"), ".2f")),
    ("mIoU", "num", lambda r: None if r.get("miou") is None else 100 * r["miou"],
     lambda r: _number(None if r.get("miou") is None else 100 * r["miou"], ".2f")),
    ("drop [95 % interval]", "num", lambda r: r.get("miou_drop"), _drop_text),
    ("images", "num", lambda r: r.get("eval_images"), lambda r: _number(r.get("eval_images"), "d")),
    ("scored on", "text", lambda r: _cells(r)["data"], lambda r: _cells(r)["data"]),
    ("status", "text", lambda r: r.get("status"), lambda r: _status(r)),
    ("Pareto", "text", lambda r: "★" if r.get("pareto") else None, lambda r: "★" if r.get("pareto") else ""),
    ("machine", "text", lambda r: _cells(r)["cpu"], lambda r: _cells(r)["cpu"]),
)

STYLE = """
:root { color-scheme: light; --line: #d0d4da; --muted: #5b6270; --pick: #fff3c4; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d2129; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.muted, figcaption { color: var(--muted); font-size: .9rem; }
.machines { display: flex; flex-wrap: wrap; gap: 1rem; }
.machine { border: 1px solid var(--line); border-radius: 6px; padding: .6rem 1rem; }
.machine dl { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; margin: 0; }
.machine dt { color: var(--muted); } .machine dd { margin: 0; font-family: ui-monospace, monospace; }
.scroll { overflow-x: auto; }
table.results { border-collapse: collapse; font-size: .9rem; white-space: nowrap; }
table.results th, table.results td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.results td.status { white-space: normal; min-width: 12rem; max-width: 28rem; }
table.results thead th { position: sticky; top: 0; background: #f3f4f6; }
table.results th button { all: unset; cursor: pointer; font-weight: 600; }
table.results th button:focus-visible { outline: 2px solid #0072B2; }
table.results th[aria-sort=ascending] button::after { content: " ▲"; }
table.results th[aria-sort=descending] button::after { content: " ▼"; }
table.results tr.picked td { background: var(--pick); }
table.results tr.failed td { color: var(--muted); }
#pick ul { padding-left: 1.2rem; } #pick li { margin: .2rem 0; }
img { max-width: 100%; height: auto; }
figure { margin: 1rem 0; }
"""

SCRIPT = """
document.querySelectorAll("table.results thead th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], index = th.cellIndex;
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = th.dataset.type === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.sort, y = b.cells[index].dataset.sort;
      if (x === "" || y === "") { return (x === "" ? 1 : 0) - (y === "" ? 1 : 0); }  /* blanks last, either way */
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _machine(row: dict) -> dict:
    machine = row.get("machine")
    if isinstance(machine, str):
        try:
            machine = json.loads(machine)
        except ValueError:
            machine = {}
    return machine if isinstance(machine, dict) else {}


def _machines_html(rows: list[dict]) -> str:
    machines: dict[str, tuple[dict, set[str]]] = {}
    for row in rows:
        machine = _machine(row)
        key = str(row.get("machine_id") or json.dumps(machine, sort_keys=True))
        machines.setdefault(key, (machine, set()))[1].add(str(row.get("profile")))
    cards = []
    for key, (m, profiles) in machines.items():
        facts = [("CPU", f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores)"), ("architecture", m.get("arch")),
                 ("OS", m.get("os")), ("GPUs", ", ".join(m.get("gpus") or []) or "none"),
                 ("CUDA driver", m.get("cuda_driver")), ("compute capability", m.get("compute_capability")),
                 ("TensorRT", m.get("tensorrt")), ("Jetson", m.get("jetson_model")), ("power mode", m.get("power_mode")),
                 ("ONNX Runtime providers", ", ".join(m.get("ort_providers") or []) or None)]
        versions = dict(m.get("versions") or {})
        for name in FIRST_VERSIONS:
            facts.append((name, versions.pop(name, None) or "not recorded"))
        facts += sorted(versions.items())
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, ""))
        cards.append(f'<div class="machine"><div class="muted">machine {_e(key)} — profiles {_e(", ".join(sorted(profiles)))}'
                     f"</div><dl>{items}</dl></div>")
    return f'<div class="machines">{"".join(cards)}</div>'


def _classes_html(rows: list[dict]) -> str:
    """Each model's class names as its rows recorded them (a Hugging Face model's id2label, a classes.txt)."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        try:
            names = json.loads(row.get("classes") or "[]")
        except (TypeError, ValueError):
            continue
        if isinstance(names, list) and names:
            seen.setdefault(str(row.get("model")), [str(n) for n in names])
    if not seen:
        return ""
    items = "".join(f"<dt>{_e(model)}</dt><dd>{_e(', '.join(names))}</dd>" for model, names in sorted(seen.items()))
    return f'<section id="classes"><h2>Classes</h2><dl>{items}</dl></section>'


def _table_html(rows: list[dict], picked: set[int]) -> str:
    head = "".join(f'<th scope="col" data-type="{kind}"><button type="button">{_e(title)}</button></th>'
                   for title, kind, _, _ in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for title, kind, key, shown in COLUMNS:
            value = key(row)
            sort = "" if value is None else (repr(float(value)) if kind == "num" else str(value).lower())
            css = " class=num" if kind == "num" else " class=status" if title == "status" else ""
            cells.append(f'<td{css} data-sort="{_e(sort)}">{_e(shown(row))}</td>')
        classes = " ".join(c for c in ("picked" if id(row) in picked else "", "failed" if row.get("status") == "failed" else "") if c)
        attributes = f' class="{classes}"' if classes else ""
        body.append(f"<tr{attributes}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="results" id="results"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _pick_html(rows: list[dict], budget_ms: float | None, max_drop: float | None) -> tuple[str, set[int]]:
    if budget_ms is None:
        return "", set()
    if max_drop is not None:
        picks = pick_fastest_within(rows, budget_ms, max_drop)
        lines = summarize_pick(picks, rows, budget_ms, max_drop)
        ask = f"the fastest row under {budget_ms:g} ms whose drop stays within {max_drop:g} points at its 95 % interval's upper end"
    else:
        picks = pick_under_budget(rows, budget_ms)
        lines = summarize_budget(picks, budget_ms, rows)
        ask = f"the most accurate row under {budget_ms:g} ms"
    items = "".join(f"<li>{_e(line)}</li>" for line in lines.splitlines())
    section = (f'<section id="pick"><h2>Budget pick</h2><p class="muted">Per profile, {_e(ask)} '
               f"(highlighted in the table):</p><ul>{items}</ul></section>")
    return section, {id(row) for row in picks.values() if row is not None}


def _figures_html(rows: list[dict], overlays: Sequence[str | Path] | None) -> tuple[str, str]:
    """The plot's and the overlays' sections, their PNGs rendered into a temp folder and embedded."""
    with tempfile.TemporaryDirectory(prefix="segedge-html-") as folder:
        try:
            plot = (f'<img id="pareto" alt="median latency against mIoU drop per model, backend and precision" '
                    f'src="{_data_uri(pareto_plot(rows, Path(folder) / "pareto.png"))}">')
        except SegedgeError as exc:
            plot = f'<p class="note" id="pareto-missing">No plot: {_e(exc)}</p>'
        try:
            pngs = list(overlays) if overlays is not None else write_overlays(rows, Path(folder) / "overlays")
            figures = "".join(f'<figure><img class="overlay" alt="{_e(Path(png).stem)}" src="{_data_uri(Path(png))}">'
                              f"<figcaption>{_e(Path(png).stem)}: image | FP32 | reduced precision | pixels where they "
                              "disagree</figcaption></figure>" for png in pngs)
        except (SegedgeError, OSError) as exc:
            pngs, figures = [], f'<p class="note">No overlays: {_e(exc)}</p>'
    if not figures:
        figures = ('<p class="note">No overlays: they need a reduced-precision (FP16, INT8…) row whose exported '
                   "artifact folder, with its manifest.json, is still on disk.</p>")
    return (f'<section id="plot"><h2>Latency vs mIoU drop</h2>{plot}</section>',
            f'<section id="overlays"><h2>Overlays</h2>{figures}</section>')


def build_html(rows: list[dict], *, budget_ms: float | None = None, max_drop: float | None = None,
               overlays: Sequence[str | Path] | None = None) -> str:
    """The report's text. ``overlays``: PNGs already written (``write_overlays``); None renders them here."""
    if not rows:
        raise SegedgeError("no rows to report; run `segedge bench` first")
    if max_drop is not None and budget_ms is None:
        raise SegedgeError("--max-drop answers together with --budget-ms: give both")
    rows = mark_pareto(sorted(rows, key=lambda r: (str(r.get("profile")), str(r.get("model")), str(r.get("precision")))))
    pick, picked = _pick_html(rows, budget_ms, max_drop)
    plot, overlay_section = _figures_html(rows, overlays)
    profiles = ", ".join(sorted({str(r.get("profile")) for r in rows}))
    try:
        from importlib.metadata import version

        writer = f"segedge {version('segedge')}"
    except Exception:  # an uninstalled checkout
        writer = "segedge"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>segedge report: {_e(profiles)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>segedge report</h1>
<p class="muted">{len(rows)} rows, profiles {_e(profiles)}; written {_e(when)} by {_e(writer)}. Drops are mIoU points
against the FP32 reference (positive = worse), with their 95 % paired-bootstrap interval.</p></header>
<section id="machines"><h2>Machines and tool versions</h2>{_machines_html(rows)}</section>
{pick}
<section id="table"><h2>Results</h2><p class="muted">Click a column header to sort by it; click again to reverse.
✅ within tolerance · ❎ drop beyond tolerance · ❔ uncertain (too few images) · ❌ failed · ★ on the Pareto front.</p>
{_table_html(rows, picked)}</section>
{_classes_html(rows)}
{plot}
{overlay_section}
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(rows: list[dict], path: str | Path, *, budget_ms: float | None = None, max_drop: float | None = None,
               overlays: Sequence[str | Path] | None = None) -> Path:
    """Write :func:`build_html` to ``path`` atomically: a failure leaves an existing file as it was."""
    from segedge.core.artifacts import atomic_path

    text = build_html(rows, budget_ms=budget_ms, max_drop=max_drop, overlays=overlays)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SegedgeError(f"cannot write the HTML report to {path}: {exc.strerror or exc}") from None
    return path

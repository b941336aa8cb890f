"""``segedge report``: tables, Pareto front, budget pick and plot from the results store."""

from __future__ import annotations

import argparse
from pathlib import Path

from segedge.cli.args import log, non_negative_float, positive_float, writable_file, writable_folder
from segedge.core.errors import SegedgeError


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables, Pareto front, budget pick and plot from the results store")
    p.add_argument("--results", default="export/results.sqlite", help="SQLite results store")
    p.add_argument("--merge", action="append", help="merge another machine's store first (repeatable)")
    p.add_argument("--profile", help="only this profile's rows")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--budget-ms", type=positive_float, help="name the most accurate model × precision under this latency "
                   "(with --max-drop: the fastest within both)")
    p.add_argument("--max-drop", type=non_negative_float, help="with --budget-ms: the most mIoU points a row may lose, "
                   "judged at the upper end of its 95 %% interval")
    p.add_argument("--plot", help="write the latency-vs-mIoU-drop Pareto plot to this PNG")
    p.add_argument("--overlays", help="write per model and precision image | FP32 | FP16/INT8 | disagreement PNGs into this folder")
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML report to FILE (opens offline: machines and "
                   "tool versions, a table sorted by clicking any column header, the Pareto plot, the budget pick with "
                   "--budget-ms, the overlays; images embedded)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.core.results import ResultsStore
    from segedge.flows.report import (pareto_plot, pick_fastest_within, pick_under_budget, render, summarize_budget,
                                      summarize_pick, write_overlays)
    from segedge.flows.html_report import write_html

    if args.max_drop is not None and args.budget_ms is None:  # every refusal before any output
        raise SegedgeError("--max-drop answers together with --budget-ms: give both")
    writable_file(args.plot, "plot")
    writable_file(args.html, "HTML report")
    writable_folder(args.overlays, "overlays")
    if Path(args.results).is_dir():
        raise SegedgeError(f"results store {args.results} is a directory; give the .sqlite file in it")
    if not Path(args.results).is_file():
        raise SegedgeError(f"no results store at {args.results}; run `segedge bench` first")
    with ResultsStore(args.results, read_only=not args.merge) as store:  # a report writes only what --merge adds
        for other in args.merge or []:
            log(f"merged {store.merge(other)} rows from {other}")
        rows = store.latest_rows()
    if args.profile:
        rows = [r for r in rows if r["profile"] == args.profile]
    if not rows:
        raise SegedgeError("the results store holds no rows" + (f" for profile {args.profile}" if args.profile else ""))
    print(render(rows, args.format), end="")
    if args.budget_ms is not None and args.max_drop is not None:
        print(summarize_pick(pick_fastest_within(rows, args.budget_ms, args.max_drop), rows, args.budget_ms, args.max_drop))
    elif args.budget_ms is not None:
        print(summarize_budget(pick_under_budget(rows, args.budget_ms), args.budget_ms, rows))
    if args.plot:
        log(f"wrote {pareto_plot(rows, args.plot)}")
    overlays = None
    if args.overlays:
        overlays = write_overlays(rows, args.overlays)
        for path in overlays:
            log(f"wrote {path}")
    if args.html:
        log(f"wrote {write_html(rows, args.html, budget_ms=args.budget_ms, max_drop=args.max_drop, overlays=overlays)}")
    return 0

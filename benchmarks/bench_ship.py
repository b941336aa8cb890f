"""`segedge ship` against the exhaustive grid on the same candidates: the same pick, at what share of the time.

    python benchmarks/bench_ship.py --profile cpu --models bisenet,ddrnet23slim,enet,segformer-b0 \
        --sizes 512x1024,384x768,256x512 --budget-ms 200 --max-drop 1.0

Every artifact is built first (not timed: both searches would reuse them). Then, in one run on one machine, the
grid measures every candidate fully (quick time, then all evaluation images, then the profile's timed runs) and
``ship`` searches the same candidates cheap first, each with a results store of its own (nothing reused between
them). Both pick by the same rule; the table says which candidate each picked, how many each measured fully and
each one's wall time, with the CPU and its flags.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from segedge.backends.profiles import list_profiles, load_profile, require_runnable
from segedge.cli.ship import sizes as _sizes
from segedge.core.artifacts import tool_versions
from segedge.core.hardware import cpu_flags, cpu_model, detect_machine
from segedge.flows.bench import BenchConfig
from segedge.flows.ship import ShipConfig, ship_search


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--models", default="bisenet,ddrnet23slim,enet,segformer-b0")
    parser.add_argument("--sizes", type=_sizes, default=((512, 1024), (384, 768), (256, 512)))
    parser.add_argument("--precisions", default="")
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--store", default="export")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    machine = detect_machine()
    profile = load_profile(args.profile, machine)
    backend = require_runnable(profile, machine, list_profiles())
    precisions = tuple(p for p in args.precisions.split(",") if p) or tuple(profile.precisions)
    work = Path(args.results) / ".ship-bench"
    work.mkdir(parents=True, exist_ok=True)
    bench = BenchConfig(models=tuple(args.models.split(",")), precisions=precisions, input_size=None,
                        store=work / "warm.sqlite", artifacts=Path(args.store), eval_images=args.eval_images)
    config = ShipConfig(bench=bench, budget_ms=args.budget_ms, max_drop=args.max_drop, sizes=args.sizes)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731

    # every artifact first, untimed: a search with an infinite budget and limit times each candidate once
    ship_search(profile, backend, machine, replace(config, budget_ms=float("inf"), max_drop=float("inf"),
                                                   steps=()), log=log)
    runs = {}
    for name, searched in (("grid", replace(config, steps=(), exhaustive=True)), ("ship", config)):
        store = work / f"{name}.sqlite"
        store.unlink(missing_ok=True)
        started = time.perf_counter()
        result = ship_search(profile, backend, machine, replace(searched, bench=replace(bench, store=store)), log=log)
        seconds = time.perf_counter() - started
        runs[name] = {"seconds": seconds, "pick": result.pick.label if result.pick else None,
                      "measured": sum(c.row is not None for c in result.candidates),
                      "fates": {c.label: c.fate for c in result.candidates}}
    share = runs["ship"]["seconds"] / runs["grid"]["seconds"]
    facts = {"cpu": cpu_model(), "flags": list(cpu_flags()), "arch": platform.machine(), "profile": profile.name,
             "backend": backend, "versions": tool_versions(), "budget_ms": args.budget_ms, "max_drop": args.max_drop,
             "candidates": len(runs["grid"]["fates"])}
    stem = f"ship-vs-grid-{profile.name}-{platform.machine()}"
    out = Path(args.results)
    (out / f"{stem}.json").write_text(json.dumps({"machine": facts, "runs": runs, "share": share}, indent=2) + "\n")
    lines = [f"ship vs the exhaustive grid on {profile.name} ({backend}), {facts['candidates']} candidates, "
             f"{args.budget_ms:g} ms and {args.max_drop:g} points; {facts['cpu']} (flags: {' '.join(facts['flags'])})", "",
             "| search | pick | measured fully | wall s |", "|---|---|---:|---:|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['pick']} | {run['measured']} | {run['seconds']:.0f} |")
    lines.append(f"\nship took {100 * share:.0f} % of the grid's time; same pick: {runs['grid']['pick'] == runs['ship']['pick']}")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

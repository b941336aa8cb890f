"""Where the test suite's time goes: README's test command with every test's duration, summed per file.

    python benchmarks/bench_test_suite.py --run after                     # runs pytest -q -n auto --durations=0
    python benchmarks/bench_test_suite.py before=old.log after=new.log    # reads logs of such runs
        [--coverage before=cov-before.json --coverage after=cov-after.json]   # coverage.py's JSON totals
        [--what before="commit, command"]                                      # what each run was

The pytest wall time is what pytest prints ("in 767.38s"); "work" is the sum of every test's setup, call and teardown,
the seconds the workers spent in tests (with 2 workers, wall ≈ work / 2 when the two finish together). Writes
benchmarks/results/test-suite-<arch>.json and .md. Run it alone: the machine's other load changes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)")
SUMMARY = re.compile(r"(\d+) passed(?:, (\d+) skipped)?.* in ([\d.]+)s")


def parse_log(text: str) -> dict:
    per_file: Counter = Counter()
    for line in text.splitlines():
        if match := DURATION.match(line):
            per_file[match.group(3).split("::")[0]] += float(match.group(1))
    summaries = [m for line in text.splitlines() if (m := SUMMARY.search(line))]
    if not per_file or not summaries:
        raise SystemExit("the log has no --durations=0 lines or no pytest summary line: run pytest with --durations=0")
    passed, skipped, wall = summaries[-1].groups()
    return {"pytest_wall_s": float(wall), "passed": int(passed), "skipped": int(skipped or 0),
            "work_s": round(sum(per_file.values()), 1),
            "slowest_files_s": {f: round(s, 1) for f, s in per_file.most_common(12)}}


def coverage_totals(path: Path) -> dict:
    totals = json.loads(path.read_text())["totals"]
    return {"percent": round(totals["percent_covered"], 2), "statements": totals["num_statements"],
            "missed": totals["missing_lines"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="*", metavar="LABEL=LOG", help="a label and the log of a pytest --durations=0 run")
    parser.add_argument("--run", metavar="LABEL", help="run README's test command now (with --durations=0) as LABEL")
    parser.add_argument("--coverage", action="append", default=[], metavar="LABEL=JSON",
                        help="coverage.py's JSON report (pytest --cov=segedge --cov-report=json:FILE) of a labelled run")
    parser.add_argument("--what", action="append", default=[], metavar="LABEL=TEXT",
                        help="what a labelled run was: its commit and command")
    args = parser.parse_args()
    runs = {label: {"what": text} for label, _, text in (item.partition("=") for item in args.what)}
    for item in args.logs:
        label, _, log = item.partition("=")
        runs.setdefault(label, {}).update(parse_log(Path(log).read_text()))
    if args.run:
        command = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--durations=0", "-p", "no:cacheprovider"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        runs.setdefault(args.run, {}).update({**parse_log(done.stdout), "exit_code": done.returncode})
    for item in args.coverage:
        label, _, path = item.partition("=")
        runs.setdefault(label, {})["line_coverage"] = coverage_totals(Path(path))
    if not runs:
        parser.error("give LABEL=LOG, --run LABEL or --coverage LABEL=JSON")

    from segedge.core.hardware import cpu_flags, cpu_model

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(),
               "flags": [f for f in cpu_flags() if f.startswith(("avx2", "avx512", "amx"))] or "no AVX2",
               "python": platform.python_version()}
    record = {"title": "Test suite time (README's test command, 2 workers)", "machine": machine, "runs": runs}
    out = ROOT / "benchmarks" / "results" / f"test-suite-{platform.machine()}"
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# {record['title']}", "", f"{machine['cpu']}, {machine['cores']} cores, {' '.join(machine['flags'])}", ""]
    for label, run in runs.items():
        if "what" in run:
            lines.append(f"- {label}: {run['what']}")
        if "pytest_wall_s" in run:
            lines.append(f"- {label}: {run['passed']} passed, {run['skipped']} skipped in {run['pytest_wall_s']:.0f} s of "
                         f"pytest ({run['work_s']:.0f} s in tests over the workers)")
        if "line_coverage" in run:
            cov = run["line_coverage"]
            lines.append(f"- {label}: line coverage {cov['percent']} % ({cov['missed']} of {cov['statements']} missed)")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

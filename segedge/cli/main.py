"""``segedge`` command line: the parser is built from one module per command in this package; each module
parses its flags (shared groups come from :mod:`segedge.cli.args`) and calls a flow.

A user mistake prints one line (``segedge: error: ...``) and exits 1; argparse's own usage errors exit 2.
"""

from __future__ import annotations

import argparse
import sys

from segedge import __version__
from segedge.cli import bench, check, eval, export, models, predict, profiles, report, sensitivity, ship, sweep, train
from segedge.core.errors import SegedgeError

# the order of `segedge --help`
COMMANDS = (models, train, export, eval, check, sensitivity, profiles, bench, sweep, report, ship, predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segedge",
        description="Take a segmentation model from PyTorch to a verified, benchmarked edge deployment.",
    )
    parser.add_argument("--version", action="version", version=f"segedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SegedgeError as exc:
        print(f"segedge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only or missing folder: the system's words on one line
        # a copy that fails names both files, source first; what ran out of room (or was refused) is the destination
        where = (f": {exc.filename2} (writing it from {exc.filename})" if exc.filename2 else
                 f": {exc.filename}" if exc.filename else "")
        print(f"segedge: error: {exc.strerror or exc}{where} (finished artifacts and rows are kept; the unfinished "
              f"one was discarded)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segedge: interrupted; finished artifacts are kept, unfinished ones were discarded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

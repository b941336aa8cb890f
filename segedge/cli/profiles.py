"""``segedge profiles``: the hardware profiles and what this machine has or lacks for each."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("profiles", help="list hardware profiles and what this machine has or lacks for each")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.backends.profiles import list_profiles
    from segedge.core.hardware import detect_machine

    machine = detect_machine()
    print(f"this machine: {machine.describe()}")
    for profile in list_profiles():
        lacks = profile.missing(machine)
        state = f"runs here ({profile.usable_backend(machine)})" if not lacks else "lacks " + "; ".join(lacks)
        print(f"{profile.name:18s} {profile.description}\n{'':18s} {state}")
    print(f"{'jetson':18s} the profile of the Jetson module segedge runs on")
    return 0

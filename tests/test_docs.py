"""The documentation site: it builds strictly, its generated pages (CLI reference, benchmark pages) are what
``docs/generate.py`` writes from the parsers and the committed results, every ``segedge`` command shown in it
parses, and README stays short."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_generated_pages_are_what_the_parsers_and_results_files_say():
    gen = generator()
    for path, text in gen.pages().items():
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run python docs/generate.py"
        assert gen.same_page(path.read_text(), text), f"{path.relative_to(ROOT)} is stale: run python docs/generate.py"
    pages = {p.stem for p in (ROOT / "docs" / "benchmarks").glob("*.md")} - {"index"}
    assert pages == {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.json")}


def test_a_benchmark_page_shows_every_figure_of_its_results_file_and_names_its_machine(tmp_path):
    """Independent of the renderer's layout: each number in the JSON appears on its page as the renderer rounds
    it, and the machine's CPU, flags and versions are there."""
    gen = generator()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        page = gen.benchmark_page(path)
        record = json.loads(path.read_text())

        def numbers(value):
            if isinstance(value, dict):
                for item in value.values():
                    yield from numbers(item)
            elif isinstance(value, list):
                for item in value:
                    yield from numbers(item)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                yield value

        for number in numbers({k: v for k, v in record.items() if k != "machine"}):
            shown = f"{number:.4g}" if isinstance(number, float) and abs(number) < 1e5 else str(
                round(number) if isinstance(number, float) else number)
            assert shown in page, (path.name, number)
        machine = record.get("machine")
        if isinstance(machine, dict):
            assert str(machine.get("cpu", "")) in page
            for flag in machine.get("flags", []):
                assert flag in page
            versions = machine.get("versions") or {}
            assert all(str(v) in page for v in versions.values())


def test_the_generator_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    gen = generator()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.json").write_text(json.dumps({"machine": {"cpu": "test"},
                                                                          "rows": [{"ms": 1.5}]}))
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(gen, "RESULTS", tmp_path / "benchmarks" / "results")
    monkeypatch.setattr(sys, "argv", ["generate.py"])
    assert gen.main() == 0
    monkeypatch.setattr(sys, "argv", ["generate.py", "--check"])
    assert gen.main() == 0
    (tmp_path / "benchmarks" / "results" / "x.json").write_text(json.dumps({"machine": {"cpu": "test"},
                                                                          "rows": [{"ms": 2.5}]}))
    assert gen.main() == 1  # the figure changed, the page did not


def test_every_segedge_command_in_the_docs_parses():
    from segedge.cli.main import build_parser

    commands = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        fences = re.findall(r"^(```|~~~)(\w*)\n(.*?)^\1", page.read_text(), re.S | re.M)
        lines = [line.split("  #")[0].strip() for _, language, block in fences
                 if language in ("", "bash", "sh", "console") for line in block.splitlines()]
        commands += [(page, line) for line in lines if line.startswith("segedge ")]
    assert len(commands) > 20
    for page, command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            raise AssertionError(f"{page.relative_to(ROOT)}: `{command}` does not parse") from exc


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="needs mkdocs: pip install -e '.[test]'")
    pytest.importorskip("material", reason="needs mkdocs-material: pip install -e '.[test]'")
    pytest.importorskip("mkdocstrings", reason="needs mkdocstrings: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()

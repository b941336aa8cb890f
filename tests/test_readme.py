"""README's promises: its first two commands, and CI running exactly the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_starts_with_a_main_job_and_a_test_command():
    main_job, tests = readme_commands()
    assert "pip install torch==2.13.0" in main_job.replace("-q ", "")
    assert main_job.index("torch==2.13.0") < main_job.index('-e ".[export]"')  # export needs torch: the CPU wheel first
    assert "segedge export --model bisenet" in main_job
    assert "pytest" in tests and tests.index("torch==2.13.0") < tests.index('-e ".[test]"')


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert tests in ci_lines


def test_every_segedge_command_in_readme_parses():
    """A flag renamed or removed breaks the README's examples: each `segedge ...` line must parse as written."""
    import shlex

    from segedge.cli.main import build_parser

    blocks = re.findall(r"```(?:bash)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("segedge ")]
    assert len(commands) > 15
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"README's `{command}` does not parse") from exc

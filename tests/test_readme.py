"""The README's code blocks run as tests (issue: the product face).

- every ```python block runs, in order, in one scratch folder (later blocks use earlier ledgers);
- every ```bash block outside the Quickstart runs, in order, in one scratch folder, with
  ``adminchain`` on the PATH and ``ADMINCHAIN_LEDGER`` pointing at the tour's ledger; each must
  exit 0, and a ```text block right after a block is its expected stdout;
- a ```text block whose first line starts with ``$ `` is a command with its expected output
  (stdout and stderr together).

Output that shows the clock (a time to the second, an age such as "(1m ago)") is compared with
those masked and runs of spaces collapsed (column widths follow the values); all else exactly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
CLOCK = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ|\(\d+[smhd] ago\)")


def masked(text: str) -> str:
    """`text` with the clock masked, when it shows one (else unchanged)."""
    if not CLOCK.search(text):
        return text
    lines = (re.sub(" +", " ", CLOCK.sub("<clock>", line)).rstrip() for line in text.split("\n"))
    return "\n".join(lines)


def blocks() -> list[tuple[str, str, int]]:
    """(language, code, offset) of every fenced block after the Quickstart section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## A tour of the command line")
    return [(m.group(1), m.group(2), m.start()) for m in BLOCK.finditer(text) if m.start() > start]


def shell_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["ADMINCHAIN_LEDGER"] = str(tmp / "tour.lmdb")
    env["USER"] = env["LOGNAME"] = "tester"
    env.pop("ADMINCHAIN_CHECKPOINT_KEY", None)
    return env


def test_quickstart_has_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text[text.index("## Quickstart") : text.index("## A tour of the command line")]
    commands = BLOCK.findall(quick)
    assert len(commands) == 2
    assert "adminchain demo" in commands[0][1]
    assert "pytest" in commands[1][1]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1][1].strip() in ci, ".ci/run must run the README's test command verbatim"


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = 0
    for language, code, _ in blocks():
        if language == "python":
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
            ran += 1
    assert ran >= 2


def test_shell_blocks_run_and_print_what_the_readme_shows(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    found = blocks()
    ran = 0
    for index, (language, code, _) in enumerate(found):
        if language == "bash":
            result = subprocess.run(
                ["bash", "-e", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, f"block failed:\n{code}\n{result.stderr}"
            ran += 1
            following = found[index + 1] if index + 1 < len(found) else None
            if (
                following
                and following[0] == "text"
                and "prints" in README.read_text()[following[2] - 200 : following[2]]
            ):
                shown = following[1]
                assert masked(result.stdout) == masked(shown), (
                    f"README shows other output for:\n{code}"
                )
        elif language == "text" and code.startswith("$ "):
            command, _, expected = code.partition("\n")
            result = subprocess.run(
                ["bash", "-c", command[2:] + " 2>&1"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.stdout == expected, f"README shows other output for {command}"
            assert "Traceback" not in result.stdout
    assert ran >= 3

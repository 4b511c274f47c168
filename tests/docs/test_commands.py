"""Every command shown in a shell code block of the repository's Markdown exists: ``make X`` is a
target of the Makefile, ``python -m pkg.mod`` a module of the repository or of an installed tool,
and any other first word a real tool (azd, az, func, azurite, npm, curl, git, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import command_problems, makefile_targets, markdown_files, relative, shell_commands

PAGES = markdown_files()
TARGETS = makefile_targets()


def test_the_makefile_targets_are_read() -> None:
    assert {"demo", "test", "bench", "sandbox", "reliability", "install", "lock"} <= TARGETS


def test_the_pages_show_commands() -> None:
    """Guards against a block reader that finds nothing, which would pass every page below."""
    assert sum(1 for page in PAGES for _ in shell_commands(page.read_text(encoding="utf-8"))) > 20


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_shown_commands_exist(page: Path) -> None:
    problems = [
        f"block at line {line}: {command!r}: {problem}"
        for line, command in shell_commands(page.read_text(encoding="utf-8"))
        for problem in command_problems(command, targets=TARGETS)
    ]
    assert problems == [], f"{relative(page)} shows commands that do not exist"

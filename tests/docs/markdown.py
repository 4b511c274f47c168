"""Small, strict readers of the repository's Markdown, for the documentation tests.

Each checker takes its inputs explicitly (the text, the repository root, the Makefile's targets),
so ``test_checkers.py`` can prove on made-up pages that it finds what it is meant to find.

- links: every relative link and image of a page resolves to a file or folder of the repository,
  and its ``#anchor`` to a heading (GitHub's slug rules) or an explicit ``<a id>`` of the page;
- commands: every line of a ``bash``/``sh``/``shell``/``console``/``powershell`` code block starts
  with something that exists: a target of the Makefile (``make X``), a module of the repository
  (``python -m pkg.mod``) or of an installed tool, or a real external tool;
- tables: the rows of Markdown tables, and those whose first column names an app setting.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"

# ----- pages


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown file git tracks or would track (new, not ignored), that exists on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],  # noqa: S607
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    return sorted({root / name for name in listed.split("\0") if name and (root / name).is_file()})


def relative(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


@dataclass(frozen=True)
class CodeBlock:
    language: str
    lines: tuple[str, ...]
    line: int  # 1-based line of the opening fence


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def split_fences(text: str) -> tuple[list[str], list[CodeBlock]]:
    """The page's lines with every fenced code block blanked out, and the blocks themselves."""
    prose: list[str] = []
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            prose.append(lines[index])
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"].strip() else ""
        body: list[str] = []
        start = index
        index += 1
        while index < len(lines):
            closing = re.match(r"^[ \t]*(`{3,}|~{3,})\s*$", lines[index])
            if closing and closing[1][0] == fence[0] and len(closing[1]) >= len(fence):
                break
            line = lines[index]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            index += 1
        blocks.append(CodeBlock(language, tuple(body), start + 1))
        prose.extend([""] * (index - start + 1))
        index += 1
    return prose, blocks


_INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def without_inline_code(line: str) -> str:
    return _INLINE_CODE.sub(lambda match: " " * len(match[0]), line)


# ----- headings and anchors (GitHub's rules)

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:[^>]*?\s)?(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
_LINK_TEXT = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text in lower case, every character that is not a
    letter, digit, underscore, hyphen or space removed, each space made a hyphen."""
    text = _LINK_TEXT.sub(lambda match: match[1], heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(text: str) -> list[str]:
    prose, _ = split_fences(text)
    found = []
    for line in prose:
        match = _HEADING.match(line)
        if match:
            found.append(match[2])
    return found


def anchors(text: str) -> set[str]:
    """Every anchor of the page: heading slugs (a repeated one gets ``-1``, ``-2``...) and ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in headings(text):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    prose, _ = split_fences(text)
    for line in prose:
        found.update(_EXPLICIT_ANCHOR.findall(line))
    return found


# ----- links

_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    target: str
    line: int


def links(text: str) -> list[Link]:
    """Links and images outside code: inline ``[text](target)`` and reference definitions."""
    prose, _ = split_fences(text)
    found: list[Link] = []
    for number, raw in enumerate(prose, start=1):
        line = without_inline_code(raw)
        for match in _INLINE_LINK.finditer(line):
            found.append(Link(match[1].strip("<>"), number))
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            found.append(Link(definition[1].strip("<>"), number))
    return found


def is_relative(target: str) -> bool:
    return not _SCHEME.match(target) and not target.startswith("//")


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``page`` whose file, folder or anchor does not exist, as ``line: why``."""
    text = page.read_text(encoding="utf-8")
    problems: list[str] = []
    own_anchors: set[str] | None = None
    for link in links(text):
        if not is_relative(link.target):
            continue
        path_part, _, fragment = link.target.partition("#")
        path_part = unquote(path_part)
        if path_part:
            base = root if path_part.startswith("/") else page.parent
            target = (base / path_part.lstrip("/")).resolve()
            if not target.exists():
                problems.append(f"line {link.line}: {link.target} (no such file)")
                continue
            if root.resolve() not in (target, *target.parents):
                problems.append(f"line {link.line}: {link.target} (outside the repository)")
                continue
        else:
            target = page.resolve()
        if not fragment or target.suffix.lower() != ".md":
            continue
        if target == page.resolve():
            if own_anchors is None:
                own_anchors = anchors(text)
            found = own_anchors
        else:
            found = anchors(target.read_text(encoding="utf-8"))
        if unquote(fragment) not in found:
            problems.append(f"line {link.line}: {link.target} (no such anchor)")
    return problems


# ----- tables

_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_FIRST_COLUMN_NAME = re.compile(r"`([A-Za-z][A-Za-z0-9_]*)`")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row outside code blocks, header rows included, separators left out."""
    prose, _ = split_fences(text)
    rows: list[list[str]] = []
    for line in prose:
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue
        cells = [cell.strip() for cell in _CELL_SEPARATOR.split(stripped)[1:-1]]
        if cells and all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def setting_rows(text: str, other_names: Iterable[str] = ()) -> list[tuple[str, list[str]]]:
    """(name, cells) of every row whose first column is one backticked setting-like name: an
    UPPER_CASE name with an underscore, or one of ``other_names`` (``AzureWebJobsStorage``)."""
    others = set(other_names)
    found: list[tuple[str, list[str]]] = []
    for cells in table_rows(text):
        match = _FIRST_COLUMN_NAME.fullmatch(cells[0]) if cells else None
        if match is None:
            continue
        name = match[1]
        if _SETTING_NAME.fullmatch(name) or name in others:
            found.append((name, cells))
    return found


# ----- commands in code blocks

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "zsh", "console", "powershell", "pwsh", "ps1"})
_POWERSHELL = frozenset({"powershell", "pwsh", "ps1"})

# Real tools a reader runs in these documents' code blocks, and shell built-ins.
EXTERNAL_TOOLS = frozenset(
    {
        # Azure and the Functions tooling
        "az",
        "azd",
        "func",
        "azurite",
        # Node, Python and git
        "node",
        "npm",
        "npx",
        "python",
        "python3",
        "py",
        "pip",
        "pip3",
        "git",
        # Package managers that install the tools above
        "brew",
        "apt-get",
        "apt",
        "winget",
        "choco",
        "dpkg",
        "sudo",
        # Network, files and text
        "curl",
        "wget",
        "gpg",
        "openssl",
        "jq",
        "tar",
        "unzip",
        "ls",
        "cat",
        "cp",
        "mv",
        "rm",
        "mkdir",
        "chmod",
        "kill",
        # Shell built-ins
        ".",
        "source",
        "cd",
        "echo",
        "printf",
        "read",
        "export",
        "set",
        "unset",
        "test",
        "true",
        # PowerShell cmdlets and aliases
        "Set-Location",
        "Copy-Item",
        "Remove-Item",
        "Get-Content",
        "Invoke-RestMethod",
        "Invoke-WebRequest",
        "Read-Host",
        "Write-Output",
    }
)
# ``python -m X`` where X is not part of this repository: the tools the dev requirements install
# and the standard library's runnable modules used in these documents.
INSTALLED_MODULES = frozenset(
    {"pytest", "pip", "piptools", "venv", "ruff", "mypy", "http.server", "json.tool"}
)
# What the project's virtual environment provides under .venv/bin (or .venv\Scripts).
VENV_TOOLS = frozenset({"python", "python3", "pip", "pytest", "ruff", "mypy", "pip-compile", "func"})
_VENV_PATH = re.compile(
    r"^(?:\./)?\.?venv[/\\](?:bin|Scripts)[/\\](?P<tool>[^/\\]+?)(?:\.exe)?$", re.IGNORECASE
)
_ACTIVATE = re.compile(r"^activate(?:\.ps1|\.bat|\.fish)?$", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def makefile_targets(makefile: Path = MAKEFILE) -> set[str]:
    targets: set[str] = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/-]+(?:\s+[A-Za-z0-9_.%/-]+)*)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(name for name in match[1].split() if not name.startswith("."))
    return targets


def command_lines(block: CodeBlock) -> list[str]:
    """The commands of a shell code block: continuation lines joined, comments and blank lines
    left out; in a ``console`` block only the lines after a ``$`` or ``>`` prompt."""
    powershell = block.language in _POWERSHELL
    continuation = "`" if powershell else "\\"
    logical: list[str] = []
    pending = ""
    for raw in block.lines:
        line = raw.rstrip()
        if pending:
            line = pending + " " + line.lstrip()
            pending = ""
        if line.endswith(continuation):
            pending = line[:-1].rstrip()
            continue
        logical.append(line)
    if pending:
        logical.append(pending)
    commands: list[str] = []
    for line in logical:
        stripped = line.strip()
        prompt = re.match(r"^(?:\$|PS>|PS [^>]*>|>)\s+", stripped)
        if block.language == "console" and prompt is None:
            continue  # output
        if prompt is not None:
            stripped = stripped[prompt.end() :]
        stripped = _strip_comment(stripped).strip()
        if stripped:
            commands.append(stripped)
    return commands


def _strip_comment(line: str) -> str:
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _substitutions(line: str) -> tuple[str, list[str]]:
    """``line`` with each ``$(...)`` replaced by a placeholder word, and the commands inside them."""
    inner: list[str] = []
    result: list[str] = []
    index = 0
    while index < len(line):
        if line.startswith("$(", index):
            depth, end = 1, index + 2
            while end < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[end], 0)
                end += 1
            inner.append(line[index + 2 : end - 1])
            result.append("SUBSTITUTED")
            index = end
            continue
        result.append(line[index])
        index += 1
    return "".join(result), inner


def _segments(line: str) -> list[str]:
    """The simple commands of a line: split at unquoted ``&&``, ``||``, ``;``, ``|`` and ``&``."""
    segments: list[str] = []
    current: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote:
            if char == quote:
                quote = None
            current.append(char)
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char in "&|;":
            # A redirection such as 2>&1 or &> keeps its ampersand.
            if char == "&" and (current[-1:] == [">"] or line[index + 1 : index + 2] == ">"):
                current.append(char)
            else:
                segments.append("".join(current))
                current = []
                if line[index + 1 : index + 2] == char:
                    index += 1
        else:
            current.append(char)
        index += 1
    segments.append("".join(current))
    return [segment.strip() for segment in segments if segment.strip()]


def _words(segment: str) -> list[str]:
    # A Windows path (.venv\Scripts\python) would lose its backslashes to POSIX quoting rules.
    segment = re.sub(r"\\(?=[A-Za-z])", "/", segment)
    try:
        return shlex.split(segment, posix=True)
    except ValueError:
        return segment.split()


def module_exists(module: str, root: Path = ROOT) -> bool:
    """``python -m module`` runs a module of the repository: a file, or a package's __main__."""
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def command_problems(line: str, *, targets: set[str], root: Path = ROOT) -> list[str]:
    """Why a command line shown in the docs would not run here: an unknown first word, a make
    target the Makefile lacks, a module that does not exist. Empty when every part is known."""
    problems: list[str] = []
    text, inner = _substitutions(line)
    for command in [*_segments(text), *inner]:
        problems.extend(_simple_command_problems(_words(command), targets=targets, root=root))
    return problems


def _simple_command_problems(words: list[str], *, targets: set[str], root: Path) -> list[str]:
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]  # NAME=value before a command
    if not words:
        return []
    first = words[0]
    if first.startswith("$") or first.startswith(("<", ">", "(", ")")):
        return []  # a PowerShell variable assignment ($env:NAME = ...), a redirection, a subshell
    if first == "sudo":
        return _simple_command_problems(words[1:], targets=targets, root=root)
    venv = _VENV_PATH.match(first)
    if venv:
        tool = venv["tool"]
        if _ACTIVATE.match(tool):
            return []
        if tool.lower() not in VENV_TOOLS:
            return [f"{first}: the virtual environment has no {tool}"]
        first = tool.lower()
    if first in {"python", "python3", "py"}:
        return _python_problems(words[1:], root=root)
    if first == "make":
        missing = [
            word for word in words[1:] if not word.startswith("-") and "=" not in word and word not in targets
        ]
        return [f"make {word}: the Makefile has no such target" for word in missing]
    if first in EXTERNAL_TOOLS:
        return []
    if ("/" in first or "\\" in first) and (root / first.replace("\\", "/")).exists():
        return []  # a script of the repository
    return [f"{first}: not a make target, a module or a known tool"]


def _python_problems(arguments: list[str], *, root: Path) -> list[str]:
    for index, argument in enumerate(arguments):
        if argument == "-m":
            if index + 1 >= len(arguments):
                return ["python -m without a module"]
            module = arguments[index + 1]
            if module in INSTALLED_MODULES or module_exists(module, root):
                return []
            return [f"python -m {module}: no such module in the repository or the installed tools"]
        if argument in {"-c", "--version", "-V"}:
            return []
        if not argument.startswith("-"):
            if (root / argument).is_file():
                return []
            return [f"python {argument}: no such script"]
    return []


def shell_commands(text: str) -> Iterator[tuple[int, str]]:
    """(line of the code block, command) of every shell code block of a page."""
    _, blocks = split_fences(text)
    for block in blocks:
        if block.language in SHELL_LANGUAGES:
            for command in command_lines(block):
                yield block.line, command

"""The deployment package: the files `azd deploy` and `func azure functionapp publish` put in the zip,
each reading .funcignore its own way (the header of .funcignore names the sources).

- azd: standard gitignore rules over the project tree (pathspec implements them), and
  local.settings.json always left out. With a .funcignore present azd adds no default exclusions.
- Core Tools: every file of the tree, followed into symbolic links, minus .git and .vscode folders
  and a few file names (.funcignore, .gitignore, local.settings.json, project.lock.json) anywhere;
  then each .funcignore line is a regular expression matched from the start of the file's path
  (`**` any characters, `*` one or more characters but `/`, a leading `/` dropped, `!` re-includes).

The package must hold the app (function_app.py, host.json, requirements.txt, shared/) and nothing of
the tests, the sandbox, the tooling, caches, virtual environments or local settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import pathspec
import pytest

ROOT = Path(__file__).resolve().parents[2]
# LICENSE is not run, but the MIT licence asks that its notice go with every copy, the zip included.
RUNTIME_FILES = frozenset({"function_app.py", "host.json", "requirements.txt", "LICENSE"})
# Folders (at the root) and file names that have no place in the app's zip.
EXCLUDED_ROOT_FOLDERS = frozenset(
    {"tests", "sandbox", "benchmarks", "docs", "scripts", "node_modules", "infra", ".ci", "out", ".state"}
)
EXCLUDED_ROOT_FILES = frozenset(
    {
        "Makefile",
        "requirements.in",
        "requirements-dev.in",
        "requirements-dev.txt",
        "package.json",
        "package-lock.json",
        "local.settings.sample.json",
    }
)


class Packager(Protocol):
    def skips_folder(self, path: str) -> bool: ...

    def keeps_file(self, path: str) -> bool: ...


class Azd:
    """azd's packaging: gitignore semantics, plus local.settings.json never packaged."""

    def __init__(self, funcignore: str) -> None:
        self._spec = pathspec.GitIgnoreSpec.from_lines(funcignore.splitlines())

    def skips_folder(self, path: str) -> bool:
        # gitignore cannot re-include a file whose folder is excluded, so pruning is exact.
        return self._spec.match_file(path + "/")

    def keeps_file(self, path: str) -> bool:
        return path != "local.settings.json" and not self._spec.match_file(path)


def _core_tools_regex(pattern: str) -> str:
    parts = re.split(r"(\*\*|\*)", pattern)
    return "".join({"**": ".+", "*": "[^/]+"}.get(part, re.escape(part)) for part in parts)


class CoreTools:
    """Core Tools' packaging: prefix-anchored regular expressions, and its built-in exclusions."""

    SKIPPED_FOLDERS = frozenset({".git", ".vscode"})
    SKIPPED_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})

    def __init__(self, funcignore: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in funcignore.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = negative if line.startswith("!") else positive
            target.append(_core_tools_regex(line.removeprefix("!").removeprefix("/")))
        self._positive = self._compile(positive)
        self._negative = self._compile(negative)
        self._can_prune = not negative

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def _denies(self, path: str) -> bool:
        if self._negative is not None and self._negative.match(path):
            return False
        return self._positive is not None and self._positive.match(path) is not None

    def skips_folder(self, path: str) -> bool:
        if path.rsplit("/", 1)[-1].lower() in self.SKIPPED_FOLDERS:
            return True
        # A match on a prefix of "folder/" is a match on every file below it.
        return self._can_prune and self._denies(path + "/")

    def keeps_file(self, path: str) -> bool:
        return path.rsplit("/", 1)[-1].lower() not in self.SKIPPED_FILES and not self._denies(path)


PACKAGERS = {"azd": Azd, "func": CoreTools}


def package(root: Path, packager: Packager) -> set[str]:
    """The files of the zip, as paths relative to the root with `/`."""
    files: set[str] = set()

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                path = prefix + entry.name
                if entry.is_dir():
                    if not packager.skips_folder(path):
                        walk(Path(entry.path), path + "/")
                elif packager.keeps_file(path):
                    files.add(path)

    walk(root, "")
    return files


def _packager(name: str, root: Path = ROOT) -> Packager:
    factory: type[Azd] | type[CoreTools] = PACKAGERS[name]
    return factory((root / ".funcignore").read_text())


def _left_out(files: Iterable[str]) -> list[str]:
    """Files that must not be in the package."""
    wrong = []
    for path in files:
        parts = path.split("/")
        if (
            parts[0] in EXCLUDED_ROOT_FOLDERS
            or parts[0].startswith(".venv")
            or "__pycache__" in parts
            or parts[-1] == "local.settings.json"
            or path in EXCLUDED_ROOT_FILES
            or (len(parts) == 1 and parts[0].endswith((".in", ".md")))
        ):
            wrong.append(path)
    return sorted(wrong)


@pytest.fixture(params=sorted(PACKAGERS))
def packager_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_the_package_holds_the_app(packager_name: str) -> None:
    files = package(ROOT, _packager(packager_name))
    assert files >= RUNTIME_FILES
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "shared").rglob("*.py")}
    code = {p for p in code if "__pycache__" not in p}
    assert code, "no shared/**/*.py found"
    assert sorted(code - files) == []
    assert "shared/email/templates/abandoned_cart.html" in files


def test_the_package_leaves_out_tests_tools_caches_and_local_settings(packager_name: str) -> None:
    files = package(ROOT, _packager(packager_name))
    assert _left_out(files) == []


def test_every_kind_of_clutter_is_left_out(packager_name: str, tmp_path: Path) -> None:
    """A tree with what a developer's checkout holds after `make test`, `make demo` and a local
    `func start`: only the app's files are packaged."""
    app = {
        "function_app.py",
        "host.json",
        "requirements.txt",
        "shared/__init__.py",
        "shared/abandoned_carts/notify.py",
        "shared/email/templates/abandoned_cart.html",
    }
    clutter = {
        "__pycache__/function_app.cpython-311.pyc",
        "shared/__pycache__/settings.cpython-311.pyc",
        "shared/abandoned_carts/__pycache__/notify.cpython-311.pyc",
        ".venv/lib/python3.11/site-packages/requests/__init__.py",
        ".venv/pyvenv.cfg",
        ".venv-checkov/bin/checkov",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/shared.meta.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/0a1b/2c3d",
        ".git/HEAD",
        ".gitignore",
        ".github/workflows/ci.yml",
        ".vscode/settings.json",
        ".azure/dev/.env",
        ".state/demo/ledger.sqlite",
        ".azurite/__queuestorage__/0001",
        ".ci/run",
        ".funcignore",
        "out/app.zip",
        "local.settings.json",
        "local.settings.sample.json",
        "tests/unit/test_settings.py",
        "sandbox/__main__.py",
        "benchmarks/results/latest.md",
        "scripts/configure_dynamics/__main__.py",
        "docs/tutorial.md",
        "README.md",
        "CONTRIBUTING.md",
        "infra/main.bicep",
        "azure.yaml",
        "openapi.yaml",
        "pyproject.toml",
        "Makefile",
        "requirements.in",
        "requirements-dev.in",
        "requirements-dev.txt",
        "node_modules/azurite/package.json",
        "package.json",
        "package-lock.json",
    }
    for path in app | clutter:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    shutil.copy(ROOT / ".funcignore", tmp_path / ".funcignore")

    assert package(tmp_path, _packager(packager_name, tmp_path)) == app


def _tracked_files() -> set[str]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout and git to list the tracked files")
    listed = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    return {path for path in listed.split("\0") if path}


def test_nothing_tracked_but_the_app_is_packaged(packager_name: str) -> None:
    """A file added to the repository is left out unless the app reads it at run time: then it
    belongs in RUNTIME_FILES (or under shared/)."""
    files = package(ROOT, _packager(packager_name)) & _tracked_files()
    extra = sorted(p for p in files if p not in RUNTIME_FILES and not p.startswith("shared/"))
    assert extra == [], f"add these to .funcignore (or to RUNTIME_FILES if the app needs them): {extra}"


@pytest.mark.parametrize(
    ("line", "path", "denied"),
    [
        ("/tests/", "tests/unit/test_x.py", True),
        ("/tests/", "shared/tests/x.py", False),
        ("__pycache__/", "shared/__pycache__/x.pyc", False),
        ("**/__pycache__/", "shared/__pycache__/x.pyc", True),
        ("**/__pycache__/", "__pycache__/x.pyc", False),
        ("/.venv*", ".venv/pyvenv.cfg", False),
        ("/.venv*", ".venv-checkov/pyvenv.cfg", True),
        ("/*.in", "requirements.in", True),
        ("/*.in", "shared/x.in", False),
    ],
)
def test_core_tools_reading_of_a_line(line: str, path: str, denied: bool) -> None:
    """The quirks the .funcignore header relies on: Core Tools anchors every line at the root and
    `*` needs a character, which is why caches and .venv are written twice."""
    assert CoreTools(line).keeps_file(path) is not denied

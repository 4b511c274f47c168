"""requirements.txt and requirements-dev.txt are what pip-compile makes of requirements.in and
requirements-dev.in (`make lock`): exact pins, each with its hashes. These tests fail when a .in and
its .txt drift apart, or when code imports a package that no .in declares. They run offline: they
read the files and the installed distributions' metadata, and never call pip-compile.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = frozenset({"shared", "sandbox", "tests", "benchmarks", "scripts", "function_app"})
# (the .in, its compiled .txt)
PAIRS = [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")]
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: frozenset[str]
    # Where pip-compile says the pin comes from: "-r file", "-c file" or a package name.
    via: tuple[str, ...]


@dataclass
class InFile:
    requirements: list[Requirement] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)  # -r
    constraints: list[str] = field(default_factory=list)  # -c


def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def _logical_lines(text: str) -> list[str]:
    """Comments dropped, backslash continuations joined, as pip reads a requirements file."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            lines.append(line)
    assert not pending.strip(), "the file ends inside a continued line"
    return lines


@cache
def read_in(name: str) -> InFile:
    parsed = InFile()
    for line in _logical_lines((ROOT / name).read_text()):
        option, _, value = line.partition(" ")
        if option in ("-r", "--requirement"):
            parsed.includes.append(value.strip())
        elif option in ("-c", "--constraint"):
            parsed.constraints.append(value.strip())
        else:
            assert not line.startswith("-"), f"{name}: unexpected option line {line!r}"
            parsed.requirements.append(Requirement(line))
    return parsed


def declared(name: str) -> dict[NormalizedName, Requirement]:
    """The requirements of a .in, those of the files it includes with -r among them."""
    found: dict[NormalizedName, Requirement] = {}
    parsed = read_in(name)
    for included in parsed.includes:
        found.update(declared(included))
    for requirement in parsed.requirements:
        key = canonicalize_name(requirement.name)
        assert key not in found, f"{name}: {requirement.name} is declared twice"
        found[key] = requirement
    return found


@cache
def read_lock(name: str) -> dict[NormalizedName, Pin]:
    """The pins of a compiled file, with the `# via` annotations pip-compile writes under each."""
    text = (ROOT / name).read_text()
    pins: dict[NormalizedName, Pin] = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#"):
            continue
        line, *_ = _logical_lines(block)
        assert not line.startswith("-"), (
            f"{name}: option line {line!r}: the lock must not carry this machine's index or find-links"
        )
        requirement_text, *options = line.split()
        requirement = Requirement(requirement_text)
        assert not requirement.extras and requirement.marker is None and requirement.url is None, line
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, (
            f"{name}: not an exact pin: {line}"
        )
        assert all(HASH.fullmatch(option) for option in options), f"{name}: {requirement.name}: {options}"
        via_text = " ".join(c.strip("# ").strip() for c in block.splitlines() if c.strip().startswith("#"))
        assert via_text.startswith("via"), f"{name}: {requirement.name} has no `# via` annotation"
        via = tuple(_split_via(via_text.removeprefix("via").strip()))
        key = canonicalize_name(requirement.name)
        assert key not in pins, f"{name}: {requirement.name} is pinned twice"
        pins[key] = Pin(Version(specifier.version), frozenset(options), via)
    return pins


def _split_via(text: str) -> Iterable[str]:
    tokens = text.split()
    while tokens:
        token = tokens.pop(0)
        if token in ("-r", "-c") and tokens:
            yield f"{token} {tokens.pop(0)}"
        else:
            yield token


def test_the_lock_files_parse_and_hold_pins() -> None:
    """Guards the parser below against a format it silently misreads."""
    for _, lock in PAIRS:
        assert len(read_lock(lock)) > 20, lock


@pytest.mark.parametrize(("source", "lock"), PAIRS)
def test_every_pin_is_exact_with_hashes(source: str, lock: str) -> None:
    for name, pin in read_lock(lock).items():
        assert pin.hashes, f"{lock}: {name}=={pin.version} has no --hash"


@pytest.mark.parametrize(("source", "lock"), PAIRS)
def test_every_declared_requirement_is_pinned_inside_its_range(source: str, lock: str) -> None:
    pins = read_lock(lock)
    for name, requirement in declared(source).items():
        assert name in pins, f"{requirement} is declared in {source} but not pinned in {lock}: run make lock"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement} in {source}: run make lock"
        )


@pytest.mark.parametrize(("source", "lock"), PAIRS)
def test_every_pin_is_wanted_by_a_declared_requirement(source: str, lock: str) -> None:
    """pip-compile notes under each pin who asked for it; a pin from a requirement since removed
    from the .in, or from no one, means the lock is stale."""
    pins = read_lock(lock)
    wanted_by: dict[NormalizedName, set[NormalizedName]] = {name: set() for name in pins}
    roots: set[NormalizedName] = set()
    for name, pin in pins.items():
        for origin in pin.via:
            if origin.startswith("-c "):
                continue
            if origin.startswith("-r "):
                included = origin.removeprefix("-r ")
                assert name in {canonicalize_name(r.name) for r in read_in(included).requirements}, (
                    f"{lock}: {name} is noted as from {included}, which does not declare it: run make lock"
                )
                roots.add(name)
            else:
                parent = canonicalize_name(origin)
                assert parent in pins, f"{lock}: {name} is noted as wanted by {origin}, which is not pinned"
                wanted_by[parent].add(name)
    reached = set(roots)
    frontier = list(roots)
    while frontier:
        for child in wanted_by[frontier.pop()]:
            if child not in reached:
                reached.add(child)
                frontier.append(child)
    assert sorted(set(pins) - reached) == [], f"{lock}: pins that no declared requirement wants"


def test_the_dev_lock_carries_the_runtime_pins() -> None:
    """One `pip install -r requirements-dev.txt` (make install) tests what Azure installs."""
    runtime, dev = read_lock("requirements.txt"), read_lock("requirements-dev.txt")
    assert "requirements.in" in read_in("requirements-dev.in").includes
    assert "requirements.txt" in read_in("requirements-dev.in").constraints
    for name, pin in runtime.items():
        assert name in dev, f"requirements-dev.txt lacks {name}: run make lock"
        assert dev[name].version == pin.version, f"{name}: {dev[name].version} in dev, {pin.version} deployed"
        assert dev[name].hashes == pin.hashes, f"{name}: the two files disagree on its hashes"


@pytest.mark.parametrize(("source", "lock"), PAIRS)
def test_compiled_for_the_functions_runtime_python(source: str, lock: str) -> None:
    """pip-compile resolves for the interpreter it runs on; the app runs on Python 3.11."""
    header = (ROOT / lock).read_text().split("\n\n", 1)[0]
    assert "autogenerated by pip-compile with Python 3.11" in header, header
    assert "make lock" in header, header


# -- what the code imports ---------------------------------------------------------------------


def imported_modules(paths: Iterable[Path]) -> dict[str, set[str]]:
    """Absolute imports of third-party modules (top level, in functions or under TYPE_CHECKING
    alike), each with the files that import it. `from a.b import c` counts as a.b.c, which is a
    submodule or else resolves to a.b below."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return found


@cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _files_of(distribution: str) -> tuple[str, ...]:
    return tuple(str(f) for f in metadata.distribution(distribution).files or ())


def distributions_of(module: str) -> set[NormalizedName]:
    """The installed distributions that provide a module. A namespace package (azure,
    opentelemetry) is shared by many: the ones owning the deepest part of the module's path win."""
    parts = module.split(".")
    candidates = set(_packages_distributions().get(parts[0], ()))
    if len(candidates) > 1:
        for depth in range(len(parts), 0, -1):
            path = "/".join(parts[:depth])
            owners = {
                d
                for d in candidates
                if any(f == f"{path}.py" or f.startswith(f"{path}/") for f in _files_of(d))
            }
            if owners:
                candidates = owners
                break
    return {canonicalize_name(d) for d in candidates}


def _undeclared(modules: dict[str, set[str]], allowed: set[NormalizedName]) -> list[str]:
    problems = []
    for module, files in sorted(modules.items()):
        owners = distributions_of(module)
        if not owners:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed")
        elif not owners & allowed:
            problems.append(f"{module} (imported by {sorted(files)[0]}) comes from {sorted(owners)}")
    return problems


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]


def test_every_module_the_app_imports_is_declared_for_the_runtime() -> None:
    modules = imported_modules([ROOT / "function_app.py", *_python_files("shared")])
    assert {"requests", "certifi", "azure.storage.queue.aio.QueueClient"} <= set(modules) | {
        m.rsplit(".", 1)[0] for m in modules
    }
    problems = _undeclared(modules, set(declared("requirements.in")))
    assert problems == [], "declare these in requirements.in, then make lock:\n" + "\n".join(problems)


def test_every_module_the_tests_and_tools_import_is_declared() -> None:
    modules = imported_modules(_python_files("tests", "sandbox", "benchmarks", "scripts"))
    problems = _undeclared(modules, set(declared("requirements-dev.in")))
    assert problems == [], "declare these in requirements-dev.in, then make lock:\n" + "\n".join(problems)


def test_a_namespace_package_resolves_to_its_own_distribution() -> None:
    assert distributions_of("azure.storage.queue.aio.QueueClient") == {"azure-storage-queue"}
    assert distributions_of("azure.core.exceptions") == {"azure-core"}
    assert distributions_of("opentelemetry.trace") == {"opentelemetry-api"}
    assert distributions_of("jwt") == {"pyjwt"}

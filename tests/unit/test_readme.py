"""README.md stays the true user documentation of the app settings and the commands.

- every field of ``shared.settings.Settings`` has a row (``| `NAME` | default | meaning |``) in
  one of the README's tables, exactly once, and its default column matches the code's default;
- every table row whose first column looks like an app setting (a backticked UPPER_CASE name) is
  a field of ``Settings`` or one of the few host, platform and test settings listed below, so a
  setting that the code no longer reads fails here instead of lingering in the docs;
- the README names the commands and steps a user needs (``make demo``, ``make test``,
  ``azd up``, distribution job 1110) and carries the architecture diagram;
- the documents the README links to exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Documented in the README's tables but read by the Functions host, the platform, azure-identity
# or the test suite, never by shared/settings.py.
NOT_SETTINGS_FIELDS = {
    "AzureWebJobsStorage",
    "FUNCTIONS_WORKER_RUNTIME",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ENABLE_OPENTELEMETRY",
    # Set by App Service authentication; shared/caller_auth.py reads it, not the settings.
    "WEBSITE_AUTH_ENABLED",
    "COSMOS_TEST_ENDPOINT",
    "COSMOS_TEST_DATABASE",
}

_SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_FIRST_COLUMN_SETTING = re.compile(r"`([A-Za-z][A-Za-z0-9_]*)`")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_UNSET = {"\u2013", "-", "\u2014"}  # en dash, hyphen, em dash


def _fields() -> dict[str, FieldInfo]:
    return {name.upper(): field for name, field in Settings.model_fields.items()}


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row (lines starting with ``|``), separator rows left out."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in _CELL_SEPARATOR.split(line.strip())[1:-1]]
        if cells and all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def _setting_rows(text: str) -> list[tuple[str, list[str]]]:
    """(name, cells) of every row whose first column is one backticked setting-like name."""
    found: list[tuple[str, list[str]]] = []
    for cells in _table_rows(text):
        match = _FIRST_COLUMN_SETTING.fullmatch(cells[0]) if cells else None
        if match is None:
            continue
        name = match.group(1)
        if _SETTING_NAME.fullmatch(name) or name in NOT_SETTINGS_FIELDS:
            found.append((name, cells))
    return found


def _default_text(value: Any) -> str | None:
    """The code default as the README writes it, or None for defaults described in words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        if all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
            return ",".join(str(item) for item in value)
        return None
    return str(value)


def _code_default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    return field.get_default(call_default_factory=True, validated_data={})


def test_every_settings_field_has_a_table_row() -> None:
    documented = {name for name, _ in _setting_rows(_readme())}
    missing = sorted(set(_fields()) - documented)
    assert missing == [], f"app settings without a README table row: {missing}"


def test_every_documented_setting_exists() -> None:
    documented = {name for name, _ in _setting_rows(_readme())}
    stale = sorted(documented - set(_fields()) - NOT_SETTINGS_FIELDS)
    assert stale == [], f"README table rows for settings the code does not read: {stale}"


def test_the_allow_list_holds_no_settings_field() -> None:
    assert not NOT_SETTINGS_FIELDS & set(_fields())


def test_each_setting_has_one_row() -> None:
    names = [name for name, _ in _setting_rows(_readme())]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert repeated == [], f"settings documented in more than one row: {repeated}"


@pytest.mark.parametrize("name", sorted(_fields()))
def test_documented_default_matches_the_code(name: str) -> None:
    rows = {row_name: cells for row_name, cells in _setting_rows(_readme())}
    assert name in rows, f"{name} has no README table row"
    cells = rows[name]
    assert len(cells) >= 3, f"{name}: the row needs the columns setting | default | meaning"
    cell = cells[1]
    field = _fields()[name]
    if field.is_required():
        assert cell.lower() == "required", f"{name} is required, the README says {cell!r}"
        return
    default = _code_default(field)
    if default is None:
        assert cell in _UNSET, f"{name} has no default (unset), the README says {cell!r}"
        return
    expected = _default_text(default)
    quoted = re.fullmatch(r"`([^`]*)`", cell)
    if expected is None:
        # A structured default (a list of objects) is described in words, not quoted.
        assert quoted is None and cell not in _UNSET, f"{name}: describe the default {default!r}"
        return
    assert quoted is not None, f"{name}: write the default as `{expected}`, not {cell!r}"
    assert quoted.group(1) == expected, f"{name}: the code's default is {expected!r}, not {cell!r}"


@pytest.mark.parametrize("phrase", ["make demo", "make test", "azd up", "1110", "```mermaid"])
def test_readme_names_the_essentials(phrase: str) -> None:
    assert phrase in _readme()


def test_linked_documents_exist() -> None:
    targets = re.findall(r"\]\(((?!https?://|#)[^)#\s]+)(?:#[^)]*)?\)", _readme())
    assert targets, "the README links no local document; the test would prove nothing"
    missing = sorted({target for target in targets if not (ROOT / target).exists()})
    assert missing == [], f"README links to missing files: {missing}"


def test_in_page_links_resolve() -> None:
    text = _readme()
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert sorted(links - anchors) == []

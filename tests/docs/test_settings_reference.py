"""docs/reference/settings.md is the one true list of the app settings, and nothing else lists them.

- every field of ``shared.settings.Settings`` has exactly one row (``| `NAME` | default | meaning |
  azd up |``) in docs/reference/settings.md, and its default column is the code's default;
- every table row of any page whose first column looks like a setting (a backticked UPPER_CASE
  name) is a field of ``Settings``, one of the few host, platform and test settings listed below,
  a variable or output of the azd environment (infra/main.parameters.json, infra/main.bicep), or
  one of the few other variables listed below, so a setting the code no longer reads fails here
  instead of lingering in the docs;
- every azd variable and output of the deployment has its row too;
- the "azd up" column says truly how a deployment sets each setting: from the azd variable of the
  same name, fixed by the Bicep, or never in Azure;
- no other Markdown file of the repository has a settings table row: they name a setting and
  link to the reference, so each default is written down once;
- the headings other documents link to stay.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.secrets import env_name_for
from shared.settings import Settings
from tests.docs.markdown import ROOT, anchors, markdown_files, relative, setting_rows
from tests.infra.bicep import app_setting_names

REFERENCE = ROOT / "docs" / "reference" / "settings.md"

# Documented in the reference but read by the Functions host, the platform, the Python worker,
# azure-monitor or the test suite, never by shared/settings.py.
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
# Environment variables a page may table although they are neither app settings nor azd's: the
# platform's managed-identity endpoint, the Python worker's other switch, and the sandbox's and the
# fault matrix's own. The environment fallbacks of the secrets are added from the code below.
OTHER_VARIABLES = {
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "SANDBOX_MEDIA_FAULT",
    "RELIABILITY_REPORT",
}
# The anchors the tutorial, the how-to guides and the README link to.
PROMISED_HEADINGS = [
    "Host",
    "Core",
    "Entra credential",
    "State store",
    "Retail Server",
    "Detection",
    "Notification",
    "Email providers",
    "Customers",
    "Privacy",
    "Recovery analytics",
    "Telemetry",
    "Tests only",
    "Secrets",
    "azd environment",
]
_UNSET = {"\u2013", "-", "\u2014"}  # en dash, hyphen, em dash
_AZD_VARIABLE = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)(?:=[^}]*)?\}$")


def _fields() -> dict[str, FieldInfo]:
    return {name.upper(): field for name, field in Settings.model_fields.items()}


def _reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def azd_variables() -> dict[str, str]:
    """azd variable -> the main.bicep parameter infra/main.parameters.json feeds with it."""
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for parameter, entry in parameters["parameters"].items():
        match = _AZD_VARIABLE.match(str(entry.get("value", "")))
        if match:
            found[match[1]] = parameter
    return found


def azd_outputs() -> set[str]:
    return set(
        re.findall(r"^output\s+([A-Z][A-Z0-9_]*)\s", (ROOT / "infra" / "main.bicep").read_text(), re.M)
    )


def known_names() -> set[str]:
    return set(_fields()) | NOT_SETTINGS_FIELDS | set(azd_variables()) | azd_outputs()


def secret_variables() -> set[str]:
    """The environment variables secrets fall back to without Key Vault (``ENTRA_CLIENT_SECRET``)."""
    return {
        env_name_for(str(field.default))
        for name, field in Settings.model_fields.items()
        if name.endswith("_secret_name")
    }


def app_settings() -> set[str]:
    """Every app setting name the reference documents: Settings fields and the listed others."""
    return set(_fields()) | NOT_SETTINGS_FIELDS


def _rows() -> list[tuple[str, list[str]]]:
    return setting_rows(_reference(), NOT_SETTINGS_FIELDS)


def default_text(value: Any) -> str | None:
    """The code default as the reference writes it, or None for defaults described in words."""
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


def default_problem(name: str, cells: list[str], field: FieldInfo) -> str | None:
    """Why a row's default column does not say the code's default, or None when it does."""
    if len(cells) < 3:
        return f"{name}: the row needs the columns setting | default | meaning"
    cell = cells[1]
    if field.is_required():
        return None if cell.lower() == "required" else f"{name} is required, the docs say {cell!r}"
    default = _code_default(field)
    if default is None:
        return None if cell in _UNSET else f"{name} has no default (unset), the docs say {cell!r}"
    expected = default_text(default)
    quoted = re.fullmatch(r"`([^`]*)`", cell)
    if expected is None:
        # A structured default (a list of objects) is described in words, not quoted.
        if quoted is None and cell not in _UNSET:
            return None
        return f"{name}: describe the default {default!r} in words"
    if quoted is None:
        return f"{name}: write the default as `{expected}`, not {cell!r}"
    if quoted[1] != expected:
        return f"{name}: the code's default is {expected!r}, not {cell!r}"
    return None


# ----- the reference


def test_every_settings_field_has_one_row_in_the_reference() -> None:
    names = [name for name, _ in _rows()]
    missing = sorted(set(_fields()) - set(names))
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert missing == [], f"app settings without a row in {relative(REFERENCE)}: {missing}"
    assert repeated == [], f"settings with more than one row in {relative(REFERENCE)}: {repeated}"


def test_every_documented_setting_exists() -> None:
    stale = sorted({name for name, _ in _rows()} - known_names())
    assert stale == [], f"rows for settings the code and the deployment do not know: {stale}"


def test_every_azd_variable_and_output_has_its_row() -> None:
    names = [name for name, _ in _rows()]
    missing = sorted((set(azd_variables()) | azd_outputs()) - set(names))
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert missing == [], f"azd variables or outputs without a row in {relative(REFERENCE)}: {missing}"
    assert repeated == []


def test_the_allow_list_holds_no_settings_field() -> None:
    assert not NOT_SETTINGS_FIELDS & set(_fields())


@pytest.mark.parametrize("name", sorted(_fields()))
def test_documented_default_matches_the_code(name: str) -> None:
    rows = dict(_rows())
    assert name in rows, f"{name} has no row in {relative(REFERENCE)}"
    assert default_problem(name, rows[name], _fields()[name]) is None


def _azure_column(cells: list[str]) -> str:
    return cells[3] if len(cells) > 3 else ""


@pytest.mark.parametrize("name", sorted(app_settings()))
def test_the_azd_up_column_says_how_azure_gets_the_setting(name: str) -> None:
    rows = dict(_rows())
    assert name in rows, f"{name} has no row in {relative(REFERENCE)}"
    column = _azure_column(rows[name]).lower()
    in_bicep = any(setting == name or setting.startswith(f"{name}__") for setting in app_setting_names())
    from_azd = name in azd_variables()
    if column.startswith("azd"):
        assert from_azd and in_bicep, f"{name}: no azd variable of that name feeds the app setting"
    elif column.startswith("fixed"):
        assert in_bicep and not from_azd, f"{name}: the column says fixed by the deployment; it is not"
    elif column.startswith(("local only", "platform", "tests only")):
        assert not in_bicep, f"{name}: the column says never set by the Bicep; the Bicep sets it"
    else:
        pytest.fail(
            f"{name}: the azd up column must start with azd, fixed, local only, platform or tests only"
        )


@pytest.mark.parametrize("heading", PROMISED_HEADINGS)
def test_the_promised_sections_stay(heading: str) -> None:
    slug = heading.lower().replace(" ", "-")
    assert slug in anchors(_reference()), f"{relative(REFERENCE)} lost its section '## {heading}'"


# ----- everywhere else


def _other_pages() -> list[Path]:
    return [page for page in markdown_files() if page != REFERENCE]


@pytest.mark.parametrize("page", markdown_files(), ids=relative)
def test_setting_like_rows_everywhere_exist(page: Path) -> None:
    """A row for a setting the code no longer reads fails here instead of lingering in a guide."""
    rows = {name for name, _ in setting_rows(page.read_text(encoding="utf-8"), NOT_SETTINGS_FIELDS)}
    unknown = sorted(rows - known_names() - secret_variables() - OTHER_VARIABLES)
    assert unknown == [], (
        f"{relative(page)} has table rows for names that are no app setting, azd variable or output: "
        f"{unknown} (a real variable that is none of these goes into OTHER_VARIABLES)"
    )


@pytest.mark.parametrize("page", _other_pages(), ids=relative)
def test_settings_rows_only_in_the_reference(page: Path) -> None:
    """Other pages name a setting and link to the reference; a table of them says a fact twice."""
    rows = [name for name, _ in setting_rows(page.read_text(encoding="utf-8"), NOT_SETTINGS_FIELDS)]
    tabled = sorted(set(rows) & app_settings())
    assert tabled == [], (
        f"{relative(page)} tables app settings that docs/reference/settings.md documents: {tabled}; "
        "name them and link to the reference instead"
    )

"""The reference pages list exactly what the code has: the HTTP endpoints registered on
``function_app.app``, the problem types the functions answer, the notify outcomes and skip reasons,
the queue message's fields, the email data's fields and the values of ``host.json``. A new reason,
route or field without its line in the reference fails here, and so does a line for one the code
dropped."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from shared.abandoned_carts.claim import _CLAIMABLE
from shared.abandoned_carts.messages import CartMessage
from shared.abandoned_carts.outcome import Status
from shared.abandoned_carts.payload import AbandonedCartPayload, ProductLine
from shared.email.emarsys import SKIP_CONTACT_MISSING
from shared.state.ledger import LedgerStatus, RecordOutcome
from tests.docs.markdown import ROOT, split_fences, table_rows

REFERENCE = ROOT / "docs" / "reference"
_BACKTICKED = re.compile(r"`([^`]+)`")


def _page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    prose, _ = split_fences(text)
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = next(i for i, line in enumerate(prose) if line.strip() == heading)
    end = len(lines)
    for index in range(start + 1, len(lines)):
        match = re.match(r"^(#{1,6}) ", prose[index])
        if match and len(match[1]) <= level:
            end = index
            break
    return "\n".join(lines[start:end])


def _first_column_names(text: str) -> list[str]:
    """The backticked names in the first column of the page's table rows, header rows left out."""
    names: list[str] = []
    for cells in table_rows(text):
        names.extend(_BACKTICKED.findall(cells[0]))
    return names


def _strings(path: Path, select: Any) -> set[str]:
    """String constants of ``path`` that ``select(node, parent)`` picks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and select(child, node):
                found.add(child.value)
    return found


def _in_call(path: Path, names: set[str]) -> set[str]:
    """String constants anywhere in the arguments of calls to ``names`` (conditional ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in names:
            for argument in node.args:
                for inner in ast.walk(argument):
                    if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                        found.add(inner.value)
    return found


def _returned(path: Path, function: str | None = None) -> set[str]:
    """String constants a function of ``path`` (or every function) returns."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (function is None or node.name == function):
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Return)
                    and isinstance(inner.value, ast.Constant)
                    and isinstance(inner.value.value, str)
                ):
                    found.add(inner.value.value)
    return found


# ----- HTTP API


def _http_functions(registered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    triggers = {}
    for name, function in registered.items():
        binding = json.loads(function.get_function_json())["bindings"][0]
        if binding["type"] == "httpTrigger":
            triggers[name] = binding
    return triggers


def _endpoint_rows() -> dict[str, list[str]]:
    return {
        _BACKTICKED.findall(cells[1])[0]: cells
        for cells in table_rows(_section(_page("http-api.md"), "## Endpoints"))
        if len(cells) >= 3 and _BACKTICKED.findall(cells[1])
    }


def test_every_http_function_is_documented_with_its_routes_and_auth_level(
    registered_functions: dict[str, Any],
) -> None:
    functions = _http_functions(registered_functions)
    rows = _endpoint_rows()
    assert sorted(rows) == sorted(functions), "the Endpoints table must list exactly the HTTP functions"
    for name, binding in functions.items():
        routes = {f"{method.upper()} /api/{binding['route']}" for method in binding["methods"]}
        assert set(_BACKTICKED.findall(rows[name][0])) == routes, name
        assert rows[name][2].lower() == binding["authLevel"].lower(), name


def test_every_endpoint_has_its_section() -> None:
    text = _page("http-api.md")
    for name, cells in _endpoint_rows().items():
        routes = _BACKTICKED.findall(cells[0])
        methods = " and ".join(route.split(" ")[0] for route in routes)
        heading = f"## {methods} {routes[0].split(' ')[1]}"
        assert heading in text.splitlines(), f"{name}: no section {heading!r}"


def code_problem_types() -> set[str]:
    """The problem kinds the HTTP functions answer: the second argument of every ``reject`` and
    ``_problem`` call under shared/, and the validation type of pydantic errors."""
    kinds = {"validation"}
    for path in (ROOT / "shared").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in {"reject", "_problem"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                kinds.add(node.args[1].value)
    return kinds


def test_the_problem_types_are_exactly_the_codes() -> None:
    documented = _first_column_names(_section(_page("http-api.md"), "### Problem types"))
    assert sorted(documented) == sorted(code_problem_types())
    assert len(code_problem_types()) > 15


# ----- outcomes and skip reasons


def _notify_rows() -> list[list[str]]:
    return table_rows(_section(_page("outcomes-and-skip-reasons.md"), "## Notify outcomes"))[1:]


def _reasons(status: str) -> set[str]:
    return {
        reason for cells in _notify_rows() if cells[0] == status for reason in _BACKTICKED.findall(cells[1])
    }


def test_the_notify_statuses_are_exactly_the_codes() -> None:
    documented = {cells[0] for cells in _notify_rows()}
    assert documented == set(Status.__args__)  # type: ignore[attr-defined]


def code_skip_reasons() -> set[str]:
    notify = ROOT / "shared" / "abandoned_carts"
    return (
        _returned(notify / "checks.py")
        | _returned(ROOT / "shared" / "privacy" / "consent.py", "consent_refusal")
        | _in_call(notify / "notify.py", {"_SkippedError", "_refuse", "_skip"})
        | _in_call(notify / "render.py", {"RenderSkipError"})
        | {SKIP_CONTACT_MISSING}
    )


def test_the_notify_skip_reasons_are_exactly_the_codes() -> None:
    assert len(code_skip_reasons()) > 15
    assert _reasons("skipped") == code_skip_reasons()


def test_the_ignored_reasons_are_exactly_the_codes() -> None:
    settled = {f"already_{status.value}" for status in LedgerStatus if status not in _CLAIMABLE}
    claim = ROOT / "shared" / "abandoned_carts" / "claim.py"
    literal = {text for text in _in_call(claim, {"Outcome"}) if not text.endswith("_")}  # f"already_{...}"
    expected = settled | {"already_gone"} | (literal - {"ignored", "uncertain"})
    expected |= {"claim_lost"}  # shared/abandoned_carts/notify.py, a claim another invocation took
    assert _reasons("ignored") == expected


def test_the_ledger_statuses_are_exactly_the_codes() -> None:
    text = _section(_page("outcomes-and-skip-reasons.md"), "## Ledger entry statuses")
    assert set(_first_column_names(text)) == {status.value for status in LedgerStatus}


def code_detection_skip_reasons() -> set[str]:
    detect = ROOT / "shared" / "abandoned_carts" / "detect.py"
    recorded = set(RecordOutcome.__args__) - {"latest"}  # type: ignore[attr-defined]
    return _returned(detect, "skip_reason") | recorded | (_strings(detect, _subscript_of("skipped")))


def _subscript_of(name: str) -> Any:
    def select(_: ast.AST, parent: ast.AST) -> bool:
        return isinstance(parent, ast.Subscript) and getattr(parent.value, "attr", None) == name

    return select


def test_the_detection_skip_reasons_are_exactly_the_codes() -> None:
    text = _section(_page("outcomes-and-skip-reasons.md"), "## Detection skip reasons")
    assert len(code_detection_skip_reasons()) >= 10
    assert set(_first_column_names(text)) == code_detection_skip_reasons()


# ----- the queue message and the email data


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_the_queue_message_fields_are_exactly_the_models() -> None:
    text = _section(_page("queue-message.md"), "## Version 2")
    assert set(_first_column_names(text)) == _aliases(CartMessage)


def test_the_email_data_fields_are_exactly_the_models() -> None:
    text = _page("email-data.md")
    tables = text.split("Each element of `products`:")
    assert set(_first_column_names(tables[0])) == _aliases(AbandonedCartPayload)
    assert set(_first_column_names(tables[1].split("\n## ")[0])) == _aliases(ProductLine)


# ----- host.json


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat |= _flatten(inner, f"{prefix}.{key}" if prefix else key)
        return flat
    return {prefix: value}


def _host_rows() -> dict[str, list[str]]:
    return {
        _BACKTICKED.findall(cells[0])[0]: cells
        for cells in table_rows(_page("host-json.md"))
        if _BACKTICKED.findall(cells[0])
    }


@pytest.mark.parametrize("key", sorted(json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]))
def test_the_queue_settings_are_documented_with_their_values(key: str) -> None:
    host = json.loads((ROOT / "host.json").read_text())
    rows = _host_rows()
    assert key in rows, f"host.json's {key} is not documented"
    assert rows[key][1] == f"`{host['extensions']['queues'][key]}`"


def test_the_other_host_settings_are_documented() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    documented = set(_first_column_names(_page("host-json.md")))
    top = {key for key in host if key not in {"version", "extensions", "logging"}}
    assert top <= documented
    rows = _host_rows()
    assert rows["functionTimeout"][1] == f"`{host['functionTimeout']}`"
    assert rows["telemetryMode"][1] == f"`{host['telemetryMode']}`"

"""azure.yaml names the one service azd deploys: `api`, Python, on Azure Functions."""

from __future__ import annotations

from typing import Any

from tests.infra.bicep import ROOT, Template, main


def _load_simple_yaml(text: str) -> dict[str, Any]:
    """Nested mappings of scalars, which is all azure.yaml uses (no PyYAML in the dev venv)."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        assert key and not key.startswith("-"), f"unsupported YAML line: {raw!r}"
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = value.strip().strip("'\"")
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def _azure_yaml() -> dict[str, Any]:
    return _load_simple_yaml((ROOT / "azure.yaml").read_text())


def test_one_service_named_api() -> None:
    services = _azure_yaml()["services"]
    assert list(services) == ["api"]
    api = services["api"]
    assert api["language"] == "python"
    assert api["host"] == "function"


def test_service_project_holds_the_function_app() -> None:
    project = ROOT / _azure_yaml()["services"]["api"]["project"]
    assert (project / "function_app.py").is_file()
    assert (project / "host.json").is_file()
    assert (project / "requirements.txt").is_file()


def test_function_app_carries_the_azd_service_tag() -> None:
    api, _ = main().module("api")
    (site_symbol,) = api.resources_of_type("Microsoft.Web/sites")
    tags = api.resources[site_symbol]["config"]["tags"]["function"]
    assert tags["type"] == "union"
    # pycep keeps the quotes of a quoted key.
    assert tags["parameters"]["arg_2"] == {"'azd-service-name'": "api"}


def test_infra_default_path_is_used() -> None:
    # azd looks for infra/main.bicep and infra/main.parameters.json unless azure.yaml says otherwise.
    assert "infra" not in _azure_yaml()
    assert Template(ROOT / "infra" / "main.bicep").parameters

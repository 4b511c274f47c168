"""Read the Bicep in infra/ with pycep and follow names back to the values they stand for.

pycep turns a Bicep file into JSON in which a bare identifier (``logLevel``) and a string literal
(``'logLevel'``) both come out as Python strings. A string is therefore taken as a reference when
it names a parameter, variable or resource of the same file; Bicep would reject a literal used
where these tests look anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"

_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class ParamRef:
    """A parameter of a template whose value is not known in the template itself."""

    template: Path
    name: str


@dataclass(frozen=True)
class Opaque:
    """A value known only at deployment (a resource property, a function call)."""

    expression: str


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    return dict(_parser().parse(file_path=path))


class Template:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.json = parse(path)
        self.parameters: dict[str, Any] = self.json.get("parameters", {})
        self.variables: dict[str, Any] = self.json.get("variables", {})
        self.resources: dict[str, Any] = self.json.get("resources", {})
        self.modules: dict[str, Any] = self.json.get("modules", {})

    def resource_body(self, symbol: str) -> dict[str, Any]:
        """The resource's own properties, under its condition and loop wrappers if it has them."""
        config: dict[str, Any] = self.resources[symbol]["config"]
        while "config" in config and ("condition" in config or "loop_type" in config):
            config = config["config"]
        return config

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            symbol: self.resource_body(symbol)
            for symbol, resource in self.resources.items()
            if resource["type"] == resource_type and not resource["existing"]
        }

    def module(self, symbol: str) -> tuple[Template, dict[str, Any]]:
        module = self.modules[symbol]
        return Template((self.path.parent / module["detail"]["path"]).resolve()), module["config"]["params"]

    def resolve(self, value: Any) -> Any:
        """Follow variables and property accessors of this file; parameters stay ``ParamRef``."""
        if isinstance(value, str):
            if value in self.variables:
                return self.resolve(self.variables[value]["value"])
            if value in self.parameters:
                return ParamRef(self.path, value)
            if _INTERPOLATION.search(value):
                return self._interpolate(value)
            return value
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, dict) and "operator" in value:
            operator = value["operator"]
            if operator["type"] == "property_accessor":
                target = self.resolve(operator["operands"]["operand_1"])
                key = operator["operands"]["operand_2"]
                if isinstance(target, dict) and isinstance(key, str) and key in target:
                    return self.resolve(target[key])
            if operator["type"] == "minus" and "integer_value" in operator["operands"]:
                return -int(operator["operands"]["integer_value"])
        if isinstance(value, dict) and ("operator" in value or "function" in value):
            return Opaque(repr(value))
        return value

    def _interpolate(self, text: str) -> str | Opaque:
        """Fill in what this file knows; anything left (``${storage.id}``) makes the result opaque."""
        unresolved = False

        def one(match: re.Match[str]) -> str:
            nonlocal unresolved
            head, _, rest = match.group(1).partition(".")
            resolved = self.resolve(head)
            for key in rest.split(".") if rest else []:
                resolved = (
                    self.resolve(resolved[key]) if isinstance(resolved, dict) and key in resolved else None
                )
            if isinstance(resolved, str | int) and not isinstance(resolved, bool):
                return str(resolved)
            unresolved = True
            return match.group(0)

        filled = _INTERPOLATION.sub(one, text)
        return Opaque(filled) if unresolved else filled

    def symbol_of(self, value: Any) -> str | None:
        """The resource a ``scope``/``parent`` points at: ``vault`` or ``vault.id``."""
        if isinstance(value, str) and value in self.resources:
            return value
        if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
            operands = value["operator"]["operands"]
            if operands["operand_1"] in self.resources and operands["operand_2"] == "id":
                return str(operands["operand_1"])
        return None


def through_module(parent: Template, module_symbol: str, value: Any) -> Any:
    """Resolve a value inside a module, following its parameters out to what ``parent`` passes."""
    child, params = parent.module(module_symbol)
    resolved = child.resolve(value)
    if isinstance(resolved, ParamRef) and resolved.name in params:
        return parent.resolve(params[resolved.name])
    return resolved


def main() -> Template:
    return Template(MAIN)


def main_param_default(ref: ParamRef) -> Any:
    """A main.bicep parameter's default, or ``ref`` itself when it has none."""
    default = main().parameters[ref.name].get("default")
    return ref if default is None else default

"""Read the Bicep in infra/ with pycep and follow names back to the values they stand for.

pycep turns a Bicep file into JSON in which a bare identifier (``logLevel``) and a string literal
(``'logLevel'``) both come out as Python strings. A string is therefore taken as a reference when
it names a parameter, variable or resource of the same file; Bicep would reject a literal used
where these tests look anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
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
        config = module["config"]
        # A conditional module (`= if (vnetEnabled) {...}`) wraps its body in a condition.
        while "condition" in config:
            config = config["config"]
        return Template((self.path.parent / module["detail"]["path"]).resolve()), config["params"]

    def module_condition(self, symbol: str) -> Any:
        """The module's ``if (...)`` expression, None when it is always deployed."""
        return self.modules[symbol]["config"].get("condition")

    def module_arguments(self, symbol: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """What this template passes the module when its own parameters are ``arguments``."""
        _, params = self.module(symbol)
        return {name: self.evaluate(expression, arguments) for name, expression in params.items()}

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
            if head not in self.variables and head not in self.parameters:
                unresolved = True
                return match.group(0)
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

    def evaluate(self, value: Any, arguments: Mapping[str, Any]) -> Any:
        """What Bicep computes for ``value`` when the parameters are ``arguments`` (else defaults).

        Enough of the language for app settings and the alerts' schedule arithmetic: literals,
        parameters, variables, interpolation, ``cond ? a : b``, ``==``/``!=``/``!``/``&&``/``||``,
        ``<``/``<=``/``>``/``>=``, ``+``/``-``/``*``/``/`` on integers, ``a[i]``, and ``empty``,
        ``string``, ``concat``, ``toLower``/``toUpper``, ``split``, ``replace``, ``trim``, ``length``,
        ``startsWith``, ``contains``, ``substring``, ``int``, ``min``, ``max``. A resource, a module
        output or any other function stays ``Opaque``; a parameter with neither argument nor
        default stays ``ParamRef``. pycep gets operator precedence wrong, so an expression evaluated
        here must be parenthesised as Bicep would group it.
        """
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self._evaluate_name(value, arguments)
        if isinstance(value, list):
            return [self.evaluate(item, arguments) for item in value]
        if isinstance(value, dict) and "operator" in value:
            return self._evaluate_operator(value, arguments)
        if isinstance(value, dict) and "function" in value:
            return self._evaluate_function(value, arguments)
        if isinstance(value, dict):
            return {key: self.evaluate(item, arguments) for key, item in value.items()}
        return Opaque(repr(value))

    def _evaluate_name(self, value: str, arguments: Mapping[str, Any]) -> Any:
        if value in self.variables:
            return self.evaluate(self.variables[value]["value"], arguments)
        if value in self.parameters:
            if value in arguments:
                return arguments[value]
            # pycep gives a parameter without a default ``"default": None``.
            default = self.parameters[value].get("default")
            return ParamRef(self.path, value) if default is None else self.evaluate(default, arguments)
        if value in self.resources or value in self.modules:
            return Opaque(value)
        if not _INTERPOLATION.search(value):
            return value
        unresolved = False

        def one(match: re.Match[str]) -> str:
            nonlocal unresolved
            head, *keys = match.group(1).split(".")
            known = head in self.variables or head in self.parameters
            filled = self._follow(self._evaluate_name(head, arguments), keys) if known else None
            if isinstance(filled, str | int) and not isinstance(filled, bool):
                return str(filled)
            unresolved = True
            return match.group(0)

        text = _INTERPOLATION.sub(one, value)
        return Opaque(text) if unresolved else text

    @staticmethod
    def _follow(target: Any, keys: list[str]) -> Any:
        for key in keys:
            if isinstance(target, Opaque):
                target = Opaque(f"{target.expression}.{key}")
            elif isinstance(target, dict) and key in target:
                target = target[key]
            else:
                return Opaque(f"{target!r}.{key}")
        return target

    def _evaluate_operator(self, value: dict[str, Any], arguments: Mapping[str, Any]) -> Any:
        operator = value["operator"]
        kind, operands = operator["type"], operator["operands"]
        if kind == "property_accessor":
            # a.b.c is a right-nested chain: operand_1 a, operand_2 (b, c).
            keys: list[str] = []
            rest = operands["operand_2"]
            while isinstance(rest, dict) and rest.get("operator", {}).get("type") == "property_accessor":
                keys.append(rest["operator"]["operands"]["operand_1"])
                rest = rest["operator"]["operands"]["operand_2"]
            if not isinstance(rest, str) or not all(isinstance(key, str) for key in keys):
                return Opaque(repr(value))
            return self._follow(self.evaluate(operands["operand_1"], arguments), [*keys, rest])
        if kind == "conditional":
            condition = self.evaluate(operands["condition"], arguments)
            if not isinstance(condition, bool):
                return Opaque(repr(value))
            branch = operands["true_value"] if condition else operands["false_value"]
            return self.evaluate(branch, arguments)
        values = [self.evaluate(operand, arguments) for operand in operands.values()]
        if any(isinstance(item, ParamRef | Opaque) for item in values):
            return Opaque(repr(value))
        if kind == "equals":
            return values[0] == values[1]
        if kind == "not_equals":
            return values[0] != values[1]
        if kind == "not" and isinstance(values[0], bool):
            return not values[0]
        if kind == "and" and all(isinstance(item, bool) for item in values):
            return all(values)
        if kind == "or" and all(isinstance(item, bool) for item in values):
            return any(values)
        if kind == "minus" and isinstance(values[0], int):
            return -values[0]
        if kind == "index_accessor" and isinstance(values[0], list) and _is_int(values[1]):
            return values[0][values[1]] if 0 <= values[1] < len(values[0]) else Opaque(repr(value))
        if kind in _INTEGER_OPERATORS and all(_is_int(item) for item in values):
            return _INTEGER_OPERATORS[kind](values[0], values[1])
        return Opaque(repr(value))

    def _evaluate_function(self, value: dict[str, Any], arguments: Mapping[str, Any]) -> Any:
        function = value["function"]
        values = [self.evaluate(item, arguments) for item in function.get("parameters", {}).values()]
        if any(isinstance(item, ParamRef | Opaque) for item in values):
            return Opaque(repr(value))
        kind = function["type"]
        if (
            kind == "empty"
            and len(values) == 1
            and (values[0] is None or isinstance(values[0], str | list | dict))
        ):
            return not values[0]
        if kind == "string" and len(values) == 1:
            return arm_string(values[0])
        if kind == "concat" and values and all(isinstance(item, list) for item in values):
            return [element for item in values for element in item]
        if kind == "concat" and values and all(isinstance(item, str | int) for item in values):
            return "".join(arm_string(item) for item in values)
        if kind in ("to_lower", "to_upper") and len(values) == 1 and isinstance(values[0], str):
            return values[0].lower() if kind == "to_lower" else values[0].upper()
        return _evaluate_text_function(kind, values, value)

    def symbol_of(self, value: Any) -> str | None:
        """The resource a ``scope``/``parent`` points at: ``vault`` or ``vault.id``."""
        if isinstance(value, str) and value in self.resources:
            return value
        if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
            operands = value["operator"]["operands"]
            if operands["operand_1"] in self.resources and operands["operand_2"] == "id":
                return str(operands["operand_1"])
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_divide(left: int, right: int) -> int | Opaque:
    # ARM's div() truncates toward zero; division by zero fails the deployment.
    if right == 0:
        return Opaque(f"{left} / 0")
    quotient = abs(left) // abs(right)
    return quotient if (left >= 0) == (right >= 0) else -quotient


_INTEGER_OPERATORS: dict[str, Any] = {
    "plus": lambda a, b: a + b,
    "substract": lambda a, b: a - b,  # pycep's spelling
    "multiply": lambda a, b: a * b,
    "divide": _int_divide,
    "greater_than": lambda a, b: a > b,
    "greater_than_or_equals": lambda a, b: a >= b,
    "less_than": lambda a, b: a < b,
    "less_than_or_equals": lambda a, b: a <= b,
}


def _evaluate_text_function(kind: str, values: list[Any], value: Any) -> Any:
    """The string, array and number functions of ARM that the templates compute with."""
    if kind == "split" and len(values) == 2 and all(isinstance(item, str) for item in values):
        return values[0].split(values[1])
    if kind == "replace" and len(values) == 3 and all(isinstance(item, str) for item in values):
        return values[0].replace(values[1], values[2])
    if kind == "trim" and len(values) == 1 and isinstance(values[0], str):
        return values[0].strip()
    if kind == "length" and len(values) == 1 and isinstance(values[0], str | list | dict):
        return len(values[0])
    if kind == "starts_with" and len(values) == 2 and all(isinstance(item, str) for item in values):
        return values[0].lower().startswith(values[1].lower())  # ARM compares case-insensitively
    if kind == "contains" and len(values) == 2 and isinstance(values[0], str) and isinstance(values[1], str):
        return values[1] in values[0]  # ordinal, as ARM compares strings here
    if kind == "substring" and isinstance(values[0], str) and _is_int(values[1]):
        text, start = values[0], values[1]
        length = values[2] if len(values) > 2 and values[2] is not None else len(text) - start
        if not _is_int(length) or start < 0 or length < 0 or start + length > len(text):
            return Opaque(repr(value))  # ARM fails the deployment
        return text[start : start + length]
    if kind == "int" and len(values) == 1:
        if _is_int(values[0]):
            return values[0]
        if isinstance(values[0], str) and re.fullmatch(r"[+-]?[0-9]+", values[0].strip()):
            return int(values[0])
        return Opaque(repr(value))  # ARM fails the deployment
    if kind in ("min", "max") and values and all(_is_int(item) for item in values):
        return min(values) if kind == "min" else max(values)
    return Opaque(repr(value))


def through_module(parent: Template, module_symbol: str, value: Any) -> Any:
    """Resolve a value inside a module, following its parameters out to what ``parent`` passes."""
    child, params = parent.module(module_symbol)
    resolved = child.resolve(value)
    if isinstance(resolved, ParamRef) and resolved.name in params:
        return parent.resolve(params[resolved.name])
    return resolved


def arm_string(value: Any) -> str:
    """ARM's ``string()``: ``True``/``False`` for booleans (capitalised, as .NET writes them)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def main() -> Template:
    return Template(MAIN)


def _site(api: Template) -> dict[str, Any]:
    sites = api.resources_of_type("Microsoft.Web/sites")
    assert len(sites) == 1, "expected one function app"
    (site,) = sites.values()
    return site


def _setting_entries(template: Template, value: Any) -> Iterator[dict[str, Any]]:
    """Every ``{name, value}`` the settings expression can produce, whichever branch is taken."""
    if isinstance(value, str) and value in template.variables:
        yield from _setting_entries(template, template.variables[value]["value"])
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and "name" in item:
                yield item
            else:
                yield from _setting_entries(template, item)
    elif isinstance(value, dict) and value.get("operator", {}).get("type") == "conditional":
        operands = value["operator"]["operands"]
        yield from _setting_entries(template, operands["true_value"])
        yield from _setting_entries(template, operands["false_value"])
    elif isinstance(value, dict) and value.get("function", {}).get("type") == "concat":
        for item in value["function"]["parameters"].values():
            yield from _setting_entries(template, item)
    else:
        raise AssertionError(f"cannot read app settings from {value!r}")


def api_arguments(main_arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters main.bicep passes to app/api.bicep, given main's own (else their defaults)."""
    root = main()
    _, params = root.module("api")
    return {name: root.evaluate(expression, main_arguments or {}) for name, expression in params.items()}


def app_setting_names() -> dict[str, Any]:
    """Each app setting the Bicep may give the function app, with its unevaluated value."""
    api, _ = main().module("api")
    expression = _site(api)["properties"]["siteConfig"]["appSettings"]
    entries = list(_setting_entries(api, expression))
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "an app setting is listed twice"
    return {entry["name"]: entry["value"] for entry in entries}


def app_settings(main_arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The app settings a deployment with these main.bicep parameters (else defaults) gets."""
    api, _ = main().module("api")
    expression = _site(api)["properties"]["siteConfig"]["appSettings"]
    entries = api.evaluate(expression, api_arguments(main_arguments))
    assert isinstance(entries, list), f"app settings did not evaluate to a list: {entries!r}"
    settings = {entry["name"]: entry["value"] for entry in entries}
    assert len(settings) == len(entries), "an app setting is listed twice"
    return settings


def referenced_parameters(template: Template, value: Any) -> set[str]:
    """The parameters of ``template`` an (unevaluated) expression uses, through its variables."""
    if isinstance(value, str):
        if value in template.variables:
            return referenced_parameters(template, template.variables[value]["value"])
        return {value} if value in template.parameters else set()
    if isinstance(value, dict):
        return {name for item in value.values() for name in referenced_parameters(template, item)}
    if isinstance(value, list):
        return {name for item in value for name in referenced_parameters(template, item)}
    return set()


def main_parameters_of_settings() -> dict[str, set[str]]:
    """App setting -> the main.bicep parameters its value is made of, through what main passes on."""
    root = main()
    api, params = root.module("api")
    return {
        setting: {
            name
            for api_parameter in referenced_parameters(api, value)
            if api_parameter in params
            for name in referenced_parameters(root, params[api_parameter])
        }
        for setting, value in app_setting_names().items()
    }


def settings_fed_by_one_parameter() -> dict[str, str]:
    """App setting -> the main.bicep parameter it is made of alone (an operator's choice)."""
    root = main()
    api, params = root.module("api")
    found: dict[str, str] = {}
    for setting, value in app_setting_names().items():
        used = referenced_parameters(api, value)
        if len(used) != 1:
            continue
        passed = params.get(next(iter(used)))
        # A bare name of main.bicep's parameter; a variable or an expression is not a choice.
        if isinstance(passed, str) and passed in root.parameters:
            found[setting] = passed
    return found

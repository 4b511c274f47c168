"""infra/ as it deploys for one set of main.bicep parameters, for a scanner that cannot evaluate Bicep.

checkov reads Bicep without evaluating it: a property that names a parameter is read as that
parameter's default, and an expression such as ``vnetEnabled ? 'Disabled' : 'Enabled'`` is not
read at all. So each mode is scanned on a copy of infra/ in which

- main.bicep's parameters default to the mode's values, and each of its one-line variables that
  the mode decides (``var publicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'``) becomes
  that literal: checkov carries a module call's arguments into the module's parameters, and an
  expression it cannot read there made its verdict depend on the order it visited them (a check
  passed or failed with the interpreter's hash seed);
- every parameter of a module that main.bicep calls once defaults to the literal main.bicep passes
  it in that mode, as the tests' evaluator (``tests/infra/bicep.py``) computes it, so the module's
  resources show the values they deploy with (a value known only at deployment stays as it is);
- in the private mode, skips whose reason starts with ``Public mode (vnetEnabled false):`` are
  removed: they hold only while the data services are public, so there checkov must pass those
  checks on the resources themselves.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.infra.bicep import INFRA, MAIN, Template

PUBLIC_MODE_SKIP = re.compile(
    r"^\s*// checkov:skip=CKV_[A-Z0-9_]+:Public mode \(vnetEnabled false\):.*\n", re.M
)

# The parameter sets scanned: the default deployment and private networking with a NAT gateway.
MODES: dict[str, dict[str, Any]] = {
    "public": {"vnetEnabled": False},
    "private": {"vnetEnabled": True, "vnetOutbound": "natGateway"},
}


def bicep_literal(value: Any) -> str | None:
    """``value`` as a Bicep literal, or None for what is not a plain string, number or boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${")
        return f"'{escaped}'"
    return None


def _assign(text: str, keyword: str, head: str, values: Mapping[str, str]) -> str:
    """``text`` with each named one-line declaration (``keyword name`` then ``head``) set to its
    value (a Bicep literal)."""
    for name, literal in values.items():
        pattern = re.compile(rf"^({keyword} {re.escape(name)}{head})(?: = [^{{\[\n]*)?$", re.M)
        text, count = pattern.subn(lambda match, lit=literal: f"{match.group(1)} = {lit}", text)
        if count != 1:
            raise AssertionError(f"cannot set {keyword} {name}")
    return text


def with_defaults(text: str, defaults: Mapping[str, str]) -> str:
    """``text`` with each named one-line ``param`` given the default."""
    return _assign(text, "param", r" \w+", defaults)


def with_variables(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each named one-line ``var`` set to the value."""
    return _assign(text, "var", "", values)


def _decided_variables(template: Template, arguments: Mapping[str, Any], text: str) -> dict[str, str]:
    """main.bicep's one-line expression variables whose value the mode's arguments decide."""
    one_line = set(re.findall(r"^var (\w+) = [^{\[\n'][^{\[\n]*$", text, re.M))
    decided = {}
    for name in sorted(one_line & set(template.variables)):
        literal = bicep_literal(template.evaluate(name, arguments))
        if literal is not None:
            decided[name] = literal
    return decided


def render(mode: str, destination: Path) -> Path:
    """Write infra/ for ``MODES[mode]`` under ``destination``; return the copy's root."""
    arguments = MODES[mode]
    target = destination / "infra"
    shutil.copytree(INFRA, target)
    root = Template(MAIN)
    main_text = with_defaults(
        MAIN.read_text(),
        {name: literal for name, value in arguments.items() if (literal := bicep_literal(value))},
    )
    main_text = with_variables(main_text, _decided_variables(root, arguments, main_text))
    (target / "main.bicep").write_text(main_text)

    calls = Counter(root.module(symbol)[0].path for symbol in root.modules)
    for symbol in root.modules:
        child, _ = root.module(symbol)
        if calls[child.path] != 1:
            # Called with different values (the private endpoints); its defaults cannot say both.
            continue
        defaults = {
            name: literal
            for name, value in root.module_arguments(symbol, arguments).items()
            if name in child.parameters and (literal := bicep_literal(value)) is not None
        }
        copy = target / child.path.relative_to(INFRA)
        copy.write_text(with_defaults(copy.read_text(), defaults))

    if arguments.get("vnetEnabled"):
        for path in target.rglob("*.bicep"):
            path.write_text(PUBLIC_MODE_SKIP.sub("", path.read_text()))
    return target

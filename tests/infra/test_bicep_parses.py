"""Every Bicep file parses, and every local module a template names exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, MAIN, bicep_files, parse


def test_infra_has_a_subscription_scoped_main() -> None:
    assert MAIN.is_file()
    assert parse(MAIN)["globals"]["scope"]["value"] == "subscription"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    template = parse(path)
    assert template.get("resources") or template.get("modules"), f"{path} declares nothing"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_local_modules_exist(path: Path) -> None:
    for symbol, module in parse(path).get("modules", {}).items():
        assert module["type"] == "local", f"{symbol}: registry modules cannot be checked offline"
        assert (path.parent / module["detail"]["path"]).is_file(), f"{symbol} names a missing file"

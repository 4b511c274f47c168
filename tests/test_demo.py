"""``make demo`` end to end: detection, notification and CreateCustomer through the registered
functions against the sandbox, in a scratch directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox import demo


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered_functions: dict[str, Any]) -> Path:
    # registered_functions first: the demo re-indexes the app after the session fixture did.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENTRA_CLIENT_SECRET", raising=False)
    return tmp_path


async def test_demo_detects_notifies_and_creates_a_customer(scratch: Path) -> None:
    text = await demo.run_demo("preview", seed=42)
    assert "Detection (detect_abandoned_carts, one timer run):" in text
    previewed = next(line for line in text.splitlines() if line.strip().endswith(" previewed"))
    count = int(previewed.split()[0])
    assert count > 0
    pages = sorted((scratch / "out/previews").glob("*.html"))
    payloads = sorted((scratch / "out/previews").glob("*.json"))
    assert len(pages) == count and len(payloads) == count
    data = json.loads(payloads[0].read_text())["data"]
    assert data["products"] and data["cartUrl"].startswith("https://shop.example.com/cart?cartId=")
    assert "skipped (no_email)" in text or "skipped (" in text
    assert "CreateCustomer: POST /api/customers answered 201, new customer account" in text
    assert "ms-d365sc://executeAction?actionName=D365.CreateTransaction&param=" in text


async def test_demo_through_the_emarsys_stand_in(scratch: Path) -> None:
    text = await demo.run_demo("emarsys", seed=7)
    accepted = next(line for line in text.splitlines() if "Emarsys stand-in accepted" in line)
    sent = next(line for line in text.splitlines() if line.strip().endswith(" sent"))
    assert accepted.split("accepted ")[1].split()[0] == sent.split()[0]

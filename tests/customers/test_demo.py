"""The demo's CreateCustomer step prints an account number and a deep link."""

from __future__ import annotations

from sandbox.demo_customers import demo_create_customer
from sandbox.fno import FinanceOpsStandIn
from sandbox.server import Sandbox
from shared.settings import Settings


async def test_demo_creates_one_customer(
    sandbox: Sandbox, settings: Settings, fno_stand_in: FinanceOpsStandIn
) -> None:
    text = await demo_create_customer(sandbox, settings.model_copy(update={"fno_url": None}))
    assert fno_stand_in.creations == 1
    assert fno_stand_in.customers[0].account in text
    assert "ms-d365sc://executeAction?actionName=D365.CreateTransaction&param=" in text

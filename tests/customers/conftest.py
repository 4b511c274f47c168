"""Fixtures for the customer tests: the sandbox with its F&O stand-in, settings pointing at it,
a payload built from a seeded customer's name (so the log guard knows what must not leak), and the
payload's email and phone, which the seeded data does not hold, for the shared guard to look for."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import fno
from sandbox.server import Sandbox
from shared.settings import Settings
from tests.conftest import sandbox_settings

NEW_EMAIL = "robin.o'hara+till@example.org"
NEW_PHONE = "+14255550199"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, extensions=[fno.add_routes]) as running:
        yield running


def create_route(settings: Settings) -> str:
    """The fault-injection route of CreateCustomer, in the case the settings spell the URL."""
    assert settings.fno_url is not None
    return "POST /" + settings.fno_url.split("/", 3)[3] + settings.fno_create_customer_path


@pytest.fixture
def fno_stand_in(sandbox: Sandbox) -> fno.FinanceOpsStandIn:
    return fno.stand_in(sandbox)


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    # Upper case and a trailing slash on purpose: the token audience must still be exact.
    return sandbox_settings(
        sandbox,
        tmp_path,
        fno_url=fno.fno_url(sandbox).replace("/fno", "/FnO") + "/",
        cpos_url="https://pos.contoso.example/cpos",
    )


@pytest.fixture
def seeded_person(sandbox: Sandbox) -> Any:
    return next(c for c in sandbox.data.customers.values() if c.first_name and len(c.last_name) >= 5)


@pytest.fixture
def payload(seeded_person: Any) -> dict[str, Any]:
    """A valid request body: a seeded customer's name with a new email, so F&O creates it."""
    address = {
        "Addresstitle": "Home",
        "Street": "1 Microsoft Way",
        "Addresstype": "Billing",
        "PrimaryAddress": "Yes",
        "PostalCode": "98052",
        "City": "Redmond",
        "Country": "United States",
        "CountryCode": "USA",
        "State": "WA",
    }
    return copy.deepcopy(
        {
            "Customer": {
                "LegalEntity": "USRT",
                "FirstName": seeded_person.first_name,
                "MiddleName": "",
                "LastName": seeded_person.last_name,
                "ContactNumber": NEW_PHONE,
                "CurrencyCode": "USD",
                "EmailAddress": NEW_EMAIL,
                "DateOfBirth": "11/10/1997",
                "Gender": "Male",
                "BillingAddress": [address],
                "ShippingAddress": [{**address, "Addresstype": "Shipping"}],
            }
        }
    )


@pytest.fixture
def extra_personal_data() -> tuple[str, ...]:
    """The payload's own email and phone (not in the seeded data), for the shared guard."""
    return (NEW_EMAIL, NEW_PHONE, NEW_PHONE[2:])

"""The CreateCustomer part of ``make demo``: one customer through the registered function.

The sandbox must have been started with the F&O stand-in (``extensions=[sandbox.fno.add_routes]``).
The demo points ``FNO_URL`` at it when the settings leave it unset, calls ``create_customer`` with
a real ``azure.functions.HttpRequest`` as the host would, and returns printable lines.
"""

from __future__ import annotations

import json
import uuid

import azure.functions as func

import shared.runtime as runtime_module
from sandbox.fno import fno_url, stand_in
from sandbox.server import Sandbox
from shared.customers.blueprint import create_customer
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings

DEMO_CUSTOMER = {
    "Customer": {
        "LegalEntity": "USRT",
        "FirstName": "Avery",
        "MiddleName": "",
        "LastName": "Demo",
        "ContactNumber": "+1 425 555 0100",
        "CurrencyCode": "usd",
        "EmailAddress": "avery.demo@example.com",
        "DateOfBirth": "11/10/1997",
        "Gender": "NonSpecific",
        "BillingAddress": [
            {
                "Addresstitle": "Home",
                "Street": "1 Demo Way",
                "Addresstype": "Billing",
                "PrimaryAddress": "Yes",
                "PostalCode": "98052",
                "City": "Redmond",
                "Country": "United States",
                "CountryCode": "usa",
                "State": "WA",
            }
        ],
        "ShippingAddress": [],
    }
}


async def demo_create_customer(sandbox: Sandbox, settings: Settings) -> str:
    """Create the demo customer; the account number and deep links as printable lines."""
    stand_in(sandbox)  # fails clearly when the sandbox runs without the F&O stand-in
    if not settings.fno_url:
        settings = settings.model_copy(update={"fno_url": fno_url(sandbox)})
    previous = runtime_module._runtime
    runtime = Runtime.create(settings)
    set_runtime(runtime)
    try:
        response: func.HttpResponse = await create_customer(demo_request())
    finally:
        set_runtime(previous)
        await runtime.close()
    return describe(response)


def demo_request() -> func.HttpRequest:
    """``POST /api/customers`` with the demo customer, as the POS extension sends it."""
    return func.HttpRequest(
        "POST",
        "http://localhost:7071/api/customers",
        headers={"Content-Type": "application/json", "Idempotency-Key": f"demo-{uuid.uuid4()}"},
        body=json.dumps(DEMO_CUSTOMER).encode("utf-8"),
    )


def describe(response: func.HttpResponse) -> str:
    body = json.loads(response.get_body())
    if response.status_code != 201:
        status, title = response.status_code, body.get("title")
        return f"CreateCustomer: POST /api/customers answered {status}: {title} - {body.get('detail')}"
    lines = [
        f"CreateCustomer: POST /api/customers answered 201, new customer account {body['customerAccount']}",
        f"  Store Commerce deep link: {body['deepLinks']['storeCommerce']}",
    ]
    if "cloudPos" in body["deepLinks"]:
        lines.append(f"  Cloud POS deep link:      {body['deepLinks']['cloudPos']}")
    return "\n".join(lines)

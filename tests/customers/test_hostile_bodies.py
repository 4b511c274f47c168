"""Hostile bodies for POST /api/customers and POST /api/store-commerce/links.

Through the registered functions, against the sandbox: whatever the body, the answer is never a
5xx; a refusal is ``application/problem+json`` naming the field; and input the connector can
judge itself never reaches F&O or Entra ID (the sandbox counts every request it gets).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sandbox.server import Sandbox
from shared.json_limits import MAX_JSON_DEPTH
from shared.runtime import Runtime
from tests.customers.conftest import NEW_EMAIL, NEW_PHONE
from tests.customers.helpers import call, http_request
from tests.hostile import CONTENT_TYPES, HOSTILE, OWN_REFUSALS, TRIED, bodies, kind_of, problem_of

_ADDRESS = {
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
CUSTOMER = {
    "Customer": {
        "LegalEntity": "USRT",
        "FirstName": "Robin",
        "MiddleName": "",
        "LastName": "Hostile-Example",
        "ContactNumber": NEW_PHONE,
        "CurrencyCode": "USD",
        "EmailAddress": NEW_EMAIL,
        "DateOfBirth": "11/10/1997",
        "Gender": "Male",
        "BillingAddress": [_ADDRESS],
        "ShippingAddress": [{**_ADDRESS, "Addresstype": "Shipping"}],
    }
}
LINKS = {
    "actionName": "D365.CreateTransaction",
    "parameters": {
        "customerId": "004003",
        "items": [{"productId": 22565421963, "quantity": 2, "price": "19.99"}],
        "mode": "VoidAndCreate",
    },
}

DEEP = [
    pytest.param(b"[" * 1000, id="1000 unclosed arrays"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="5000 closed arrays"),
    pytest.param(b'{"Customer": ' * 800 + b"{}" + b"}" * 800, id="800 nested objects"),
    pytest.param(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), id="one level too deep"),
]


def _upstream(sandbox: Sandbox) -> int:
    return sum(sandbox.stats.requests.values()) + sum(sandbox.stats.token_requests.values())


@pytest.mark.parametrize("function", ["create_customer", "store_commerce_links"])
@pytest.mark.parametrize("raw", DEEP)
async def test_deeply_nested_json_is_invalid_json(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, function: str, raw: bytes
) -> None:
    route = "customers" if function == "create_customer" else "store-commerce/links"
    response = await call(registered_functions, function, http_request(route, raw=raw))
    assert response.status_code == 400
    problem = problem_of(response)
    assert problem["type"].endswith(":invalid-json")
    assert problem["errors"][0]["path"] == ""
    assert f"deeper than {MAX_JSON_DEPTH} levels" in problem["errors"][0]["message"]
    assert _upstream(sandbox) == 0


async def test_nesting_up_to_the_limit_is_parsed(
    registered_functions: dict[str, Any], runtime: Runtime
) -> None:
    # Valid JSON at the limit reaches validation (and fails it there, naming the field).
    raw = b'{"Customer": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    response = await call(registered_functions, "create_customer", http_request("customers", raw=raw))
    problem = problem_of(response)
    assert problem["type"].endswith(":validation") and problem["errors"][0]["path"] == "Customer"


@HOSTILE
@given(
    body=bodies(CUSTOMER),
    content_type=CONTENT_TYPES,
    key=st.none() | st.text(max_size=80) | st.sampled_from(["k-1", "k-1", "k-2"]),
)
async def test_create_customer_answers_any_body_without_a_5xx(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    body: bytes,
    content_type: str,
    key: str | None,
) -> None:
    TRIED["create_customer"] += 1
    headers = {"Content-Type": content_type} | ({"Idempotency-Key": key} if key is not None else {})
    before = _upstream(sandbox)
    response = await call(
        registered_functions, "create_customer", http_request("customers", raw=body, headers=headers)
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.get_body()
    if response.status_code >= 400:
        problem = problem_of(response)
        if kind_of(problem) in OWN_REFUSALS:
            assert _upstream(sandbox) == before, problem
    else:
        assert response.status_code == 201


@HOSTILE
@given(body=bodies(LINKS), content_type=CONTENT_TYPES)
async def test_store_commerce_links_answers_any_body_without_a_5xx(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, body: bytes, content_type: str
) -> None:
    TRIED["store_commerce_links"] += 1
    request = http_request("store-commerce/links", raw=body, headers={"Content-Type": content_type})
    response = await call(registered_functions, "store_commerce_links", request)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.get_body()
    if response.status_code >= 400:
        problem_of(response)
    else:
        assert response.status_code == 200
    # Building links calls nothing upstream, whatever the body.
    assert _upstream(sandbox) == 0

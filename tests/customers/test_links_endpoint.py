"""POST /api/store-commerce/links through the registered function."""

from __future__ import annotations

from typing import Any

import pytest

from shared.runtime import Runtime
from shared.store_commerce import parse_deep_link
from tests.customers.helpers import body_of, call, http_request


async def links(functions: dict[str, Any], body: Any) -> Any:
    return await call(functions, "store_commerce_links", http_request("store-commerce/links", body))


@pytest.mark.parametrize(
    ("action", "parameters"),
    [
        ("D365.RecallOrder", {"salesId": "SO-12345"}),
        (
            "D365.CreateTransaction",
            {
                "customerId": "004003",
                "items": [{"productId": 22565421963, "quantity": 2}],
                "mode": "VoidAndCreate",
            },
        ),
        ("Contoso.PosExtensions.ClientelingAppointment", {"appointmentId": "A-1", "note": "Grüße"}),
    ],
)
async def test_links_round_trip(
    registered_functions: dict[str, Any], runtime: Runtime, action: str, parameters: dict[str, Any]
) -> None:
    response = await links(registered_functions, {"actionName": action, "parameters": parameters})
    assert response.status_code == 200
    body = body_of(response)
    for url in body["deepLinks"].values():
        parsed = parse_deep_link(url)
        assert (parsed.action_name, parsed.params) == (action, parameters)
    assert set(body["deepLinks"]) == {"storeCommerce", "cloudPos"}


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"actionName": "D365.RecallOrder", "parameters": {}}, 400, "parameters.salesId"),
        ({"actionName": "D365.Unknown", "parameters": {}}, 400, "actionName"),
        ({"actionName": "not an action"}, 400, "actionName"),
        ({"actionName": "D365.RecallOrder", "extra": 1}, 400, "extra"),
        ({"actionName": "Contoso.Pos.Note", "parameters": {"text": "x" * 2000}}, 422, "parameters"),
    ],
)
async def test_bad_requests_are_problems(
    registered_functions: dict[str, Any], runtime: Runtime, body: Any, status: int, path: str
) -> None:
    response = await links(registered_functions, body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert path in {error["path"] for error in body_of(response)["errors"]}


async def test_a_problem_names_its_occurrence_by_the_generated_correlation_id(
    registered_functions: dict[str, Any], runtime: Runtime
) -> None:
    body = body_of(await links(registered_functions, {"actionName": "D365.RecallOrder", "parameters": {}}))
    assert body["instance"] == "urn:uuid:" + body["correlationId"]

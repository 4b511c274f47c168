"""The F&O client against the stand-in: token audience, account number, error mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox import fno
from sandbox.server import Sandbox
from shared.finance_ops.client import FinanceOpsClient, environment_audience, error_for_response
from shared.finance_ops.errors import (
    FnoAuthError,
    FnoDuplicateError,
    FnoOperationError,
    FnoRejectedError,
    FnoThrottledError,
    FnoTimeoutError,
    FnoUnavailableError,
    user_facing_message,
)
from shared.finance_ops.models import account_number_from, odata_string
from shared.http import HttpClient, RetryPolicy, UpstreamResponse
from shared.runtime import Runtime
from shared.settings import Settings
from tests.customers.conftest import create_route


def client(runtime: Runtime, settings: Settings, **overrides: Any) -> FinanceOpsClient:
    assert settings.fno_url is not None
    http = HttpClient(runtime.http.session, RetryPolicy(max_attempts=2, backoff_base=0, backoff_max=0))
    options: dict[str, Any] = {
        "base_url": settings.fno_url,
        "create_customer_path": settings.fno_create_customer_path,
        "timeout": 2.0,
    }
    options.update(overrides)
    return FinanceOpsClient(http, runtime.tokens, **options)


def test_audience_is_the_environment_url_lower_case_without_slash() -> None:
    assert environment_audience("https://Contoso.Operations.Dynamics.com/") == (
        "https://contoso.operations.dynamics.com"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"$id": "1", "customerAccNum": "004021"}, "004021"),
        ({"CustomerAccount": "US-001"}, "US-001"),
        ({"accountnum": "C42"}, "C42"),
        ({"customerAccount": 123}, "123"),
        ("004022", "004022"),
        (" US-001/2.a_b ", "US-001/2.a_b"),
        ("Created", None),
        ("OK", None),
        ("Customer created", None),
        ("12345678901234567890", "12345678901234567890"),
        ("123456789012345678901", None),
        ("C-1\n", "C-1"),
        ("C-1;DROP", None),
        ({"customerAccNum": "Created"}, "Created"),  # a named field is taken as it is
        ({"Success": True}, None),
        ({"customerAccNum": ""}, None),
        ({"customerAccNum": True}, None),
        (None, None),
    ],
)
def test_account_number_from_the_success_body(body: Any, expected: str | None) -> None:
    assert account_number_from(body) == expected


def _response(status: int, body: bytes = b"") -> UpstreamResponse:
    return UpstreamResponse(status=status, headers={}, body=body, correlation_id="c-0")


@pytest.mark.parametrize("status", [502, 504, 507, 599])
def test_an_unexpected_5xx_may_have_created_on_the_create_call_only(status: int) -> None:
    on_create = error_for_response(_response(status), create=True)
    on_lookup = error_for_response(_response(status), create=False)
    assert isinstance(on_create, FnoUnavailableError) and isinstance(on_lookup, FnoUnavailableError)
    assert on_create.may_have_created
    assert not on_lookup.may_have_created


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
def test_known_statuses_never_may_have_created(status: int) -> None:
    assert not error_for_response(_response(status), create=True).may_have_created


def test_odata_string_doubles_single_quotes() -> None:
    assert odata_string("o'hara@example.org") == "'o''hara@example.org'"


def test_user_facing_message_drops_the_prefix_and_the_stack() -> None:
    message = "An exception occured when invoking the operation - Field X must be filled in.\n   at X++ stack"
    assert user_facing_message(message) == "Field X must be filled in."
    assert user_facing_message("") is None


async def test_creates_with_a_token_for_the_lower_case_environment_url(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    account = await client(runtime, settings).create_customer(payload, correlation_id="c-1")
    stand_in = fno.stand_in(sandbox)
    assert stand_in.creations == 1
    assert account == stand_in.customers[0].account


async def test_wrong_audience_is_an_auth_error(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    # Audience with a trailing slash would be refused by F&O; the stand-in refuses it too.
    fno_client = client(runtime, settings)
    fno_client.scope = fno_client.audience + "//.default"
    with pytest.raises(FnoAuthError) as caught:
        await fno_client.create_customer(payload, correlation_id="c-2")
    assert caught.value.status == 401
    assert fno.stand_in(sandbox).creations == 0


async def test_unknown_company_is_a_rejection_with_its_message(
    runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    payload["Customer"]["LegalEntity"] = "ZZZZ"
    with pytest.raises(FnoRejectedError) as caught:
        await client(runtime, settings).create_customer(payload, correlation_id="c-3")
    assert caught.value.user_message == "Company 'ZZZZ' does not exist."


async def test_duplicate_email_is_a_duplicate(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    seeded = next(c for c in sandbox.data.customers.values() if c.email)
    payload["Customer"]["EmailAddress"] = seeded.email.upper()
    with pytest.raises(FnoDuplicateError) as caught:
        await client(runtime, settings).create_customer(payload, correlation_id="c-4")
    assert caught.value.user_message is not None
    assert "already exists" in caught.value.user_message
    assert "Exception" not in caught.value.user_message
    assert "Exception" in str(caught.value)  # the type is for the logs


async def test_other_500_is_an_operation_error(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    body = {
        "Message": "An exception occured when invoking the operation - Object reference not set.",
        "ExceptionType": "NullReferenceException",
        "ActivityId": "a1",
    }
    sandbox.faults.add(create_route(settings), status=500, body=json.dumps(body))
    with pytest.raises(FnoOperationError) as caught:
        await client(runtime, settings).create_customer(payload, correlation_id="c-5")
    assert caught.value.user_message == "Object reference not set."
    assert not caught.value.may_have_created
    assert sandbox.stats.requests[create_route(settings)] == 1  # a 500 is never retried


async def test_throttling_is_retried_then_reported_with_retry_after(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    sandbox.faults.add(create_route(settings), status=429, headers={"Retry-After": "0"}, times=None)
    with pytest.raises(FnoThrottledError) as caught:
        await client(runtime, settings).create_customer(payload, correlation_id="c-6")
    assert caught.value.retry_after == 0
    assert sandbox.stats.requests[create_route(settings)] == 2


async def test_timeout_may_have_created(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    fno_client = client(runtime, settings, timeout=0.3)
    await runtime.tokens.get_token(fno_client.scope)  # the token step shares the deadline
    sandbox.faults.add(create_route(settings), timeout=True)
    with pytest.raises(FnoTimeoutError) as caught:
        await fno_client.create_customer(payload, correlation_id="c-7")
    assert caught.value.may_have_created


async def test_success_false_contract_is_a_rejection(
    sandbox: Sandbox, runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    sandbox.faults.add(
        create_route(settings), status=200, body=json.dumps({"Success": False, "Message": "Blocked."})
    )
    with pytest.raises(FnoRejectedError) as caught:
        await client(runtime, settings).create_customer(payload, correlation_id="c-8")
    assert caught.value.user_message == "Blocked."


async def test_lookup_by_email_escapes_quotes_and_finds_created_customers(
    runtime: Runtime, settings: Settings, payload: dict[str, Any]
) -> None:
    fno_client = client(runtime, settings)
    email = payload["Customer"]["EmailAddress"]
    assert "'" in email
    assert await fno_client.find_customer_by_email(email, "USRT", correlation_id="c-9") is None
    account = await fno_client.create_customer(payload, correlation_id="c-10")
    found = await fno_client.find_customer_by_email(email.upper(), "usrt", correlation_id="c-11")
    assert found is not None
    assert (found.account, found.legal_entity) == (account, "usrt")
    assert await fno_client.find_customer_by_email(email, "DEMF", correlation_id="c-12") is None

"""POST /api/customers through the registered function, against the sandbox's F&O stand-in."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from sandbox.fno import FinanceOpsStandIn
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from shared import runtime as runtime_module
from shared.customers.idempotency import IdempotencyRecords
from shared.finance_ops.client import FinanceOpsClient
from shared.runtime import Runtime, set_runtime
from shared.secrets import CachedSecrets, KeyVaultSecrets
from shared.settings import Settings
from shared.state.store import StoreError
from shared.store_commerce import parse_deep_link
from tests.conftest import event_records
from tests.customers.conftest import create_route
from tests.customers.helpers import body_of, call, http_request, principal, with_fno_token

PROBLEM = "application/problem+json"
MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(runtime: Runtime, settings: Settings) -> AsyncIterator[MakeRuntime]:
    """Swap in a runtime whose settings differ from the fixture's, built as the host builds it."""
    made: list[Runtime] = []

    async def make(**overrides: Any) -> Runtime:
        created = Runtime.create(settings.model_copy(update=overrides))
        made.append(created)
        set_runtime(created)
        return created

    yield make
    set_runtime(runtime)
    for created in made:
        await created.close()


async def create(functions: dict[str, Any], body: Any, **headers: str) -> Any:
    return await call(functions, "create_customer", http_request("customers", body, headers=headers))


def test_route_methods_and_auth_level(registered_functions: dict[str, Any]) -> None:
    for name, route in (("create_customer", "customers"), ("store_commerce_links", "store-commerce/links")):
        function = registered_functions[name]
        assert function.is_http_function()
        trigger = json.loads(function.get_function_json())["bindings"][0]
        assert trigger["type"] == "httpTrigger"
        assert trigger["route"] == route
        assert [m.upper() for m in trigger["methods"]] == ["POST"]
        assert trigger["authLevel"].upper() == "FUNCTION"


async def test_creates_the_customer_and_answers_account_and_deep_links(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    response = await create(registered_functions, payload)
    assert response.status_code == 201, response.get_body()
    assert response.mimetype == "application/json"
    body = body_of(response)
    assert fno_stand_in.creations == 1
    account = fno_stand_in.customers[0].account
    assert body["customerAccount"] == account
    store = parse_deep_link(body["deepLinks"]["storeCommerce"])
    assert (store.action_name, store.params) == ("D365.CreateTransaction", {"customerId": account})
    assert body["deepLinks"]["storeCommerce"].startswith(
        "ms-d365sc://executeAction?actionName=D365.CreateTransaction&param="
    )
    assert body["deepLinks"]["cloudPos"].startswith("https://pos.contoso.example/cpos/POS?actionName=")
    # F&O received the normalised payload, every documented key present.
    sent = fno_stand_in.customers[0].payload["Customer"]
    assert sent["EmailAddress"] == payload["Customer"]["EmailAddress"]
    assert set(sent) == set(payload["Customer"])


async def test_no_cloud_pos_link_without_its_url(
    registered_functions: dict[str, Any], make_runtime: MakeRuntime, payload: dict[str, Any]
) -> None:
    await make_runtime(cpos_url=None)
    body = body_of(await create(registered_functions, payload))
    assert set(body["deepLinks"]) == {"storeCommerce"}


async def test_invalid_payload_is_a_problem_naming_each_field_and_never_reaches_fno(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    payload["Customer"]["EmailAddress"] = "not-an-email"
    payload["Customer"]["CurrencyCode"] = "XXQ"
    payload["Customer"]["BillingAddress"][0]["Nickname"] = "x"
    del payload["Customer"]["LastName"]
    response = await create(registered_functions, payload)
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    body = body_of(response)
    paths = {error["path"] for error in body["errors"]}
    assert {
        "Customer.EmailAddress",
        "Customer.CurrencyCode",
        "Customer.LastName",
        "Customer.BillingAddress[0].Nickname",
    } <= paths
    assert body["correlationId"] == response.headers["x-correlation-id"]
    assert "not-an-email" not in response.get_body().decode()
    assert sandbox.stats.requests[create_route(settings)] == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"Customer": NaN}', "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"{}", "application/json; charset=latin-1", 415),
        (b"[1, 2]", "application/json", 400),
    ],
)
async def test_unreadable_bodies(
    registered_functions: dict[str, Any], runtime: Runtime, raw: bytes, content_type: str, status: int
) -> None:
    request = http_request("customers", raw=raw, headers={"Content-Type": content_type})
    response = await call(registered_functions, "create_customer", request)
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    assert body_of(response)["status"] == status


async def test_body_over_the_limit_is_413(
    registered_functions: dict[str, Any], make_runtime: MakeRuntime, payload: dict[str, Any]
) -> None:
    await make_runtime(customer_max_body_bytes=1024)
    payload["Customer"]["BillingAddress"][0]["Street"] = "x" * 2000
    response = await create(registered_functions, payload)
    assert response.status_code == 413
    assert response.mimetype == PROBLEM


async def test_not_configured_is_503(
    registered_functions: dict[str, Any], make_runtime: MakeRuntime, payload: dict[str, Any]
) -> None:
    await make_runtime(fno_url=None)
    response = await create(registered_functions, payload)
    assert response.status_code == 503
    assert body_of(response)["type"].endswith("not-configured")


ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
API_CLIENT_ID = "0c057e25-a11e-4c0e-9c0e-c0ec7000a9a2"


@pytest.mark.parametrize(
    ("platform_auth", "header", "status"),
    [
        ("True", None, 401),
        ("True", "not base64 json!", 401),
        ("True", principal("Customers.Read"), 403),
        ("True", principal("Customers.Create"), 201),
        ("True", principal("Customers.Create", role_typ=ROLE_URI), 201),
        # App Service authentication off: the header is the caller's own text, whatever it says.
        (None, principal("Customers.Create"), 401),
        ("false", principal("Customers.Create"), 401),
    ],
)
async def test_easy_auth_requires_the_app_role(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    platform_auth: str | None,
    header: str | None,
    status: int,
) -> None:
    if platform_auth is None:
        monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", platform_auth)
    await make_runtime(easy_auth_enabled=True)
    headers = {"X-MS-CLIENT-PRINCIPAL": header} if header is not None else {}
    response = await create(registered_functions, payload, **headers)
    assert response.status_code == status
    assert fno_stand_in.creations == (1 if status == 201 else 0)


@pytest.mark.parametrize(("roles", "status"), [(["Customers.Create"], 201), (["Privacy.Erase"], 403)])
async def test_easy_auth_accepts_a_verified_bearer_token(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    fno_stand_in: FinanceOpsStandIn,
    sandbox: Sandbox,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    roles: list[str],
    status: int,
) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    await make_runtime(easy_auth_enabled=True, api_client_id=API_CLIENT_ID)
    token = sandbox.caller_token(audience=f"api://{API_CLIENT_ID}", roles=roles)
    response = await create(registered_functions, payload, Authorization=f"Bearer {token}")
    assert response.status_code == status
    assert fno_stand_in.creations == (1 if status == 201 else 0)


async def test_without_easy_auth_a_function_key_is_enough(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    """POS tills call with their own function key only; App Service authentication, when on for the
    erasure endpoint, lets them through (AllowAnonymous) and so must the code."""
    response = await create(registered_functions, payload)
    assert response.status_code == 201
    assert fno_stand_in.creations == 1


# ----- upstream mapping


async def test_fno_400_is_422_with_its_message(
    registered_functions: dict[str, Any], runtime: Runtime, payload: dict[str, Any]
) -> None:
    payload["Customer"]["LegalEntity"] = "ZZZZ"
    response = await create(registered_functions, payload)
    assert response.status_code == 422
    assert body_of(response)["detail"] == "Company 'ZZZZ' does not exist."


async def test_fno_duplicate_500_is_409_without_internals(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, payload: dict[str, Any]
) -> None:
    payload["Customer"]["EmailAddress"] = next(c.email for c in sandbox.data.customers.values() if c.email)
    response = await create(registered_functions, payload)
    assert response.status_code == 409
    text = response.get_body().decode()
    assert "already exists" in body_of(response)["detail"]
    for internal in ("Exception", "occured", "StackTrace", "CustTable.insert", "ActivityId"):
        assert internal not in text


async def test_other_fno_500_is_502_with_the_user_facing_part(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    failure = {
        "Message": "An exception occured when invoking the operation - Number sequence is exhausted."
        "\n   at Dynamics.AX.Application.NumberSeq.num()",
        "ExceptionType": "XppException",
        "ActivityId": "5b2f",
    }
    sandbox.faults.add(create_route(settings), status=500, body=json.dumps(failure))
    response = await create(registered_functions, payload)
    assert response.status_code == 502
    body = body_of(response)
    assert body["detail"] == "Number sequence is exhausted."
    assert "XppException" not in response.get_body().decode()
    assert "NumberSeq" not in response.get_body().decode()


@pytest.mark.parametrize("status", [401, 403])
async def test_fno_refusing_our_token_is_502_and_a_configuration_fault(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox.faults.add(create_route(settings), status=status, body="", times=None)
    with caplog.at_level(logging.ERROR):
        response = await create(registered_functions, payload)
    assert response.status_code == 502
    cid = body_of(response)["correlationId"]
    assert any("configuration fault" in r.getMessage() and cid in r.getMessage() for r in caplog.records)


async def test_timeout_is_504(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    await with_fno_token(await make_runtime(fno_timeout_seconds=0.3))
    sandbox.faults.add(create_route(settings), timeout=True)
    response = await create(registered_functions, payload)
    assert response.status_code == 504
    assert response.mimetype == PROBLEM


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 200, "body": ""},
        {"status": 200, "body": '{"Result": "ok"}'},
        {"status": 200, "body": '"Created"'},
        {"reset": True},
    ],
    ids=["200-empty", "200-unrecognised", "200-bare-word", "connection-broke-after-sending"],
)
async def test_a_create_that_may_have_succeeded_says_look_it_up_and_is_kept_for_the_key(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    fault: dict[str, Any],
) -> None:
    sandbox.faults.add(create_route(settings), **fault)
    first = await create(registered_functions, payload, **{"Idempotency-Key": "k-uncertain"})
    assert first.status_code == 502, first.get_body()
    assert first.mimetype == PROBLEM
    body = body_of(first)
    assert body["type"] == "urn:d365-commerce-connector:problem:upstream-uncertain"
    assert body["detail"] == "The customer may have been created; look it up before creating it again."
    assert "try again" not in response_text(first).lower()
    # Kept for the key: a retry with it gets the same answer and F&O is not called again.
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-uncertain"})
    assert again.status_code == 502
    assert again.headers["Idempotent-Replayed"] == "true"
    assert body_of(again)["type"] == body["type"]
    assert sandbox.stats.requests[create_route(settings)] == 1


@pytest.mark.parametrize("status", [502, 504, 507])
async def test_a_gateway_5xx_on_create_may_have_created_and_is_kept_for_the_key(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    status: int,
) -> None:
    # A front end's 504 can come after X++ ran: the create is not known to have failed.
    sandbox.faults.add(create_route(settings), status=status, body="<html>Gateway</html>")
    first = await create(registered_functions, payload, **{"Idempotency-Key": "k-gateway"})
    assert first.status_code == 502
    assert body_of(first)["type"].endswith(":upstream-uncertain")
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-gateway"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sandbox.stats.requests[create_route(settings)] == 1


async def test_a_gateway_5xx_on_the_duplicate_look_up_releases_the_key(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    fno_stand_in: FinanceOpsStandIn,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    await make_runtime(duplicate_check_enabled=True)
    sandbox.faults.add(lookup_route(settings), status=504, times=None)
    first = await create(registered_functions, payload, **{"Idempotency-Key": "k-gateway-lookup"})
    assert first.status_code == 502
    assert body_of(first)["type"].endswith(":upstream-error")
    sandbox.faults.clear()
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-gateway-lookup"})
    assert again.status_code == 201
    assert fno_stand_in.creations == 1


def response_text(response: Any) -> str:
    return str(response.get_body().decode("utf-8"))


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_is_503_with_retry_after(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    status: int,
) -> None:
    sandbox.faults.add(create_route(settings), status=status, headers={"Retry-After": "0"}, times=None)
    response = await create(registered_functions, payload)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


# ----- failures that are not F&O's


class _RefusingKeyVault:
    """A Key Vault client whose caller lacks 'get' on secrets."""

    async def get_secret(self, name: str) -> Any:
        raise HttpResponseError(message="(Forbidden) Caller is not authorized; value=hunter2-leak")

    async def close(self) -> None:
        return None


async def test_a_missing_client_secret_is_a_configuration_fault_naming_it_and_releases_the_key(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("ENTRA_CLIENT_SECRET")
    await make_runtime()
    with caplog.at_level(logging.ERROR):
        first = await create(registered_functions, payload, **{"Idempotency-Key": "k-secret"})
    assert first.status_code == 502, first.get_body()
    assert first.mimetype == PROBLEM
    body = body_of(first)
    assert body["type"].endswith(":upstream-configuration")
    faults = [r.getMessage() for r in caplog.records if "configuration fault" in r.getMessage()]
    assert faults and "'entra-client-secret'" in faults[0] and body["correlationId"] in faults[0]
    # Nothing reached F&O, so the key was released: with the secret back, the retry creates.
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-secret"})
    assert again.status_code == 201, again.get_body()
    assert fno_stand_in.creations == 1
    assert all(sandbox.client_secret not in r.getMessage() for r in caplog.records)


async def test_the_separate_fno_apps_secret_is_the_one_named(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("FNO_CLIENT_SECRET", raising=False)
    await make_runtime(fno_client_id="00000000-0000-0000-0000-0000000000f0")
    with caplog.at_level(logging.ERROR):
        response = await create(registered_functions, payload)
    assert response.status_code == 502
    assert any(
        "configuration fault" in r.getMessage() and "'fno-client-secret'" in r.getMessage()
        for r in caplog.records
    )


async def test_key_vault_refusing_the_secret_is_a_configuration_fault_without_its_text(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = KeyVaultSecrets("https://kv.example.vault.azure.net", client=_RefusingKeyVault())  # type: ignore[arg-type]
    monkeypatch.setattr(runtime_module, "secret_source", lambda url, ttl, **_: CachedSecrets(vault, ttl))
    await make_runtime()
    with caplog.at_level(logging.ERROR):
        first = await create(registered_functions, payload, **{"Idempotency-Key": "k-vault"})
        again = await create(registered_functions, payload, **{"Idempotency-Key": "k-vault"})
    assert (first.status_code, again.status_code) == (502, 502)
    assert body_of(again)["type"].endswith(":upstream-configuration")  # released, not 409 in flight
    faults = [r.getMessage() for r in caplog.records if "configuration fault" in r.getMessage()]
    assert faults and "'entra-client-secret'" in faults[0] and "HttpResponseError" in faults[0]
    lines = [r.getMessage() for r in caplog.records] + [response_text(first)]
    assert all("hunter2" not in line for line in lines)
    assert sandbox.stats.requests[create_route(settings)] == 0


@pytest.mark.parametrize(
    "fault",
    [{"status": 429, "headers": {"Retry-After": "2"}}, {"status": 503}, {"reset": True}],
    ids=["429", "503", "connection reset"],
)
async def test_entra_failing_for_a_moment_is_503_with_retry_after_and_releases_the_key(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    fno_stand_in: FinanceOpsStandIn,
    fault: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Entra ID throttling or failing is not the administrator's to fix: the till may retry.
    hit = sandbox.faults.add(f"POST /entra/{sandbox.tenant_id}/oauth2/v2.0/token", **fault)
    await make_runtime()
    with caplog.at_level(logging.ERROR):
        first = await create(registered_functions, payload, **{"Idempotency-Key": "k-entra-busy"})
    assert hit.hits == 1
    assert first.status_code == 503, first.get_body()
    assert first.mimetype == PROBLEM
    assert body_of(first)["type"].endswith(":credentials-unavailable")
    assert int(first.headers["Retry-After"]) > 0
    assert not any("configuration fault" in r.getMessage() for r in caplog.records)
    assert sandbox.stats.requests[create_route(settings)] == 0
    # Nothing reached F&O, so the key was released: the retry (on a fresh instance: MSAL keeps a
    # failed answer for a few seconds in-process) creates the customer once.
    await make_runtime()
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-entra-busy"})
    assert again.status_code == 201, again.get_body()
    assert fno_stand_in.creations == 1


async def test_entra_unreachable_is_a_configuration_fault_and_releases_the_key(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_runtime(entra_authority_host="https://127.0.0.1:9")  # nothing listens there
    with caplog.at_level(logging.ERROR):
        first = await create(registered_functions, payload, **{"Idempotency-Key": "k-entra"})
        again = await create(registered_functions, payload, **{"Idempotency-Key": "k-entra"})
    assert (first.status_code, again.status_code) == (502, 502), first.get_body()
    assert body_of(first)["type"].endswith(":upstream-configuration")
    assert body_of(again)["type"].endswith(":upstream-configuration")
    assert any("configuration fault" in r.getMessage() for r in caplog.records)
    assert sandbox.stats.requests[create_route(settings)] == 0


async def test_an_unexpected_failure_before_fno_releases_the_key_and_is_a_bare_500(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_runtime(duplicate_check_enabled=True)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Traceback (most recent call last): robin.o'hara secret-text")

    with monkeypatch.context() as patched:
        patched.setattr(FinanceOpsClient, "find_customer_by_email", broken)
        with caplog.at_level(logging.INFO):
            first = await create(
                registered_functions,
                payload,
                **{"Idempotency-Key": "k-bug", "x-correlation-id": "till-7-req-0500"},
            )
    assert first.status_code == 500
    assert first.mimetype == PROBLEM
    body = body_of(first)
    assert body["type"].endswith(":internal")
    assert body["correlationId"] == first.headers["x-correlation-id"] == "till-7-req-0500"
    text = response_text(first)
    assert "Traceback" not in text and "secret-text" not in text and "RuntimeError" not in text
    assert any(
        "RuntimeError" in r.getMessage() and "till-7-req-0500" in r.getMessage() for r in caplog.records
    )
    assert all("secret-text" not in r.getMessage() for r in caplog.records)
    # The claim was released, so the retry runs (instead of 409 "still running" for the lease).
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-bug"})
    assert again.status_code == 201, again.get_body()
    assert fno_stand_in.creations == 1


async def test_a_failing_release_does_not_mask_the_original_failure(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_runtime(duplicate_check_enabled=True)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("lookup bug")

    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("state store unavailable")

    monkeypatch.setattr(FinanceOpsClient, "find_customer_by_email", broken)
    monkeypatch.setattr(IdempotencyRecords, "release", store_down)
    with caplog.at_level(logging.INFO):
        response = await create(registered_functions, payload, **{"Idempotency-Key": "k-bug-2"})
    assert response.status_code == 500
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed unexpectedly (RuntimeError)" in m for m in messages)
    assert any("release" in m and "StoreError" in m for m in messages)


async def test_a_state_store_failure_before_fno_is_503_to_retry_and_nothing_is_created(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("state store unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.store, "create", store_down)
        response = await create(registered_functions, payload, **{"Idempotency-Key": "k-store"})
    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert int(response.headers["Retry-After"]) >= 1
    assert body_of(response)["type"].endswith(":state-store-unavailable")
    assert body_of(response)["correlationId"] == response.headers["x-correlation-id"]
    assert "state store unavailable" not in response_text(response)
    assert sandbox.stats.requests[create_route(settings)] == 0
    # Nothing was claimed: once the store is back, the retry with the same key creates.
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-store"})
    assert again.status_code == 201, again.get_body()


async def test_a_state_store_failure_after_fno_created_still_answers_201(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("state store unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.store, "replace", store_down)
        with caplog.at_level(logging.INFO):
            response = await create(registered_functions, payload, **{"Idempotency-Key": "k-complete"})
    assert response.status_code == 201, response.get_body()
    assert body_of(response)["customerAccount"] == fno_stand_in.customers[0].account
    assert any(
        "could not store" in r.getMessage() and "StoreError" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )
    # The claim stays until its lease runs out: a retry meanwhile waits instead of creating again.
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-complete"})
    assert again.status_code == 409
    assert body_of(again)["type"].endswith(":request-in-progress")
    assert fno_stand_in.creations == 1


async def test_a_problem_names_its_occurrence_by_the_generated_correlation_id(
    registered_functions: dict[str, Any], runtime: Runtime, payload: dict[str, Any]
) -> None:
    payload["Customer"]["LegalEntity"] = "ZZZZ"  # a 422 from F&O
    generated = body_of(await create(registered_functions, payload))
    assert generated["instance"] == "urn:uuid:" + generated["correlationId"]
    del payload["Customer"]["LastName"]  # a 400 of our own validation
    invalid = body_of(await create(registered_functions, payload))
    assert invalid["instance"] == "urn:uuid:" + invalid["correlationId"]
    chosen = body_of(await create(registered_functions, payload, **{"x-correlation-id": "till-7-req-0042"}))
    assert "instance" not in chosen


async def test_error_correlation_id_is_logged(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    payload: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload["Customer"]["LegalEntity"] = "ZZZZ"
    with caplog.at_level(logging.INFO):
        response = await create(registered_functions, payload, **{"x-correlation-id": "till-7-req-0042"})
    assert body_of(response)["correlationId"] == "till-7-req-0042"
    assert any("till-7-req-0042" in r.getMessage() for r in caplog.records)


# ----- duplicate check


async def test_duplicate_check_answers_409_with_the_existing_account(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    fno_stand_in: FinanceOpsStandIn,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    await make_runtime(duplicate_check_enabled=True)
    seeded = next(c for c in sandbox.data.customers.values() if c.email)
    payload["Customer"]["EmailAddress"] = seeded.email
    response = await create(registered_functions, payload)
    assert response.status_code == 409
    assert body_of(response)["customerAccount"] == seeded.account_number
    assert sandbox.stats.requests[create_route(settings)] == 0
    # A new email passes the check and is created.
    payload["Customer"]["EmailAddress"] = "new.shopper@example.org"
    assert (await create(registered_functions, payload)).status_code == 201


async def test_a_duplicate_check_timeout_says_nothing_was_created_and_releases_the_key(
    registered_functions: dict[str, Any],
    make_runtime: MakeRuntime,
    sandbox: Sandbox,
    fno_stand_in: FinanceOpsStandIn,
    settings: Settings,
    payload: dict[str, Any],
) -> None:
    await with_fno_token(await make_runtime(duplicate_check_enabled=True, fno_timeout_seconds=0.3))
    sandbox.faults.add(lookup_route(settings), timeout=True, times=2)
    first = await create(registered_functions, payload, **{"Idempotency-Key": "k-lookup"})
    assert first.status_code == 504
    assert "may have been created" not in body_of(first)["detail"]
    assert sandbox.stats.requests[create_route(settings)] == 0
    again = await create(registered_functions, payload, **{"Idempotency-Key": "k-lookup"})
    assert again.status_code == 201
    assert fno_stand_in.creations == 1


def lookup_route(settings: Settings) -> str:
    assert settings.fno_url is not None
    return "GET /" + settings.fno_url.split("/", 3)[3].rstrip("/") + "/data/CustomersV3"


# ----- idempotency


async def test_same_key_and_body_replays_without_calling_fno(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    first = await create(registered_functions, payload, **{"Idempotency-Key": "till-7-0001"})
    again = await create(registered_functions, copy.deepcopy(payload), **{"Idempotency-Key": "till-7-0001"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert body_of(first) == body_of(again)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fno_stand_in.creations == 1
    assert sandbox.stats.requests[create_route(settings)] == 1


@pytest.mark.parametrize("legal_entity", ["USRT", "ZZZZ"], ids=["201", "stored-422"])
async def test_a_replay_carries_its_own_correlation_id_and_the_stored_body(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    legal_entity: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload["Customer"]["LegalEntity"] = legal_entity
    first = await create(
        registered_functions, payload, **{"Idempotency-Key": "k-cid", "x-correlation-id": "till-7-req-0001"}
    )
    with caplog.at_level(logging.INFO):
        again = await create(
            registered_functions,
            payload,
            **{"Idempotency-Key": "k-cid", "x-correlation-id": "till-7-req-0002"},
        )
    assert again.status_code == first.status_code
    assert first.headers["x-correlation-id"] == "till-7-req-0001"
    assert again.headers["x-correlation-id"] == "till-7-req-0002"
    assert again.headers["Idempotent-Replayed"] == "true"
    # The body is the stored one, documenting the first answer (its correlationId included).
    assert body_of(again) == body_of(first)
    if first.status_code >= 400:
        assert body_of(again)["correlationId"] == "till-7-req-0001"
    assert any("replayed" in r.getMessage() and "till-7-req-0002" in r.getMessage() for r in caplog.records)


async def test_same_key_other_body_is_422(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    assert (await create(registered_functions, payload, **{"Idempotency-Key": "k-1"})).status_code == 201
    payload["Customer"]["FirstName"] = "Someone"
    response = await create(registered_functions, payload, **{"Idempotency-Key": "k-1"})
    assert response.status_code == 422
    assert fno_stand_in.creations == 1


async def test_ten_concurrent_requests_with_one_key_create_once(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    sandbox.faults.add(create_route(settings), latency=0.2, times=None)
    responses = await asyncio.gather(
        *(
            create(registered_functions, copy.deepcopy(payload), **{"Idempotency-Key": "k-burst"})
            for _ in range(10)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert fno_stand_in.creations == 1
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    accounts = {body_of(r)["customerAccount"] for r in responses if r.status_code == 201}
    assert accounts == {fno_stand_in.customers[0].account}


async def test_throttled_attempt_releases_the_key_for_a_retry(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
) -> None:
    sandbox.faults.add(create_route(settings), status=503, headers={"Retry-After": "0"}, times=2)
    first = await create(registered_functions, payload, **{"Idempotency-Key": "k-2"})
    second = await create(registered_functions, payload, **{"Idempotency-Key": "k-2"})
    assert (first.status_code, second.status_code) == (503, 201)
    assert fno_stand_in.creations == 1


async def test_invalid_idempotency_key_is_400(
    registered_functions: dict[str, Any], runtime: Runtime, payload: dict[str, Any]
) -> None:
    response = await create(registered_functions, payload, **{"Idempotency-Key": "x" * 300})
    assert response.status_code == 400
    assert body_of(response)["errors"][0]["path"] == "Idempotency-Key"


async def test_an_unforeseen_failure_after_sending_is_uncertain_and_kept_for_the_key(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    fno_stand_in: FinanceOpsStandIn,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug or an unmapped error after CreateCustomer went out must not invite a second customer."""
    from shared.finance_ops.client import FinanceOpsClient

    sent = FinanceOpsClient.create_customer

    async def sent_then_broke(self: FinanceOpsClient, *args: Any, **kwargs: Any) -> str:
        await sent(self, *args, **kwargs)
        raise RuntimeError("an unforeseen failure while reading the answer")

    monkeypatch.setattr(FinanceOpsClient, "create_customer", sent_then_broke)
    first = await create(registered_functions, payload, **{"Idempotency-Key": "till-7-0099"})
    monkeypatch.setattr(FinanceOpsClient, "create_customer", sent)
    again = await create(registered_functions, copy.deepcopy(payload), **{"Idempotency-Key": "till-7-0099"})

    assert first.status_code == 502
    assert body_of(first)["type"].endswith(":upstream-uncertain")
    assert "unforeseen" not in first.get_body().decode()
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (502, "true")
    assert fno_stand_in.creations == 1


async def test_each_answer_is_counted_timed_and_recorded_by_status_and_outcome(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    payload: dict[str, Any],
    telemetry: LocalTelemetry,
    log_privacy_guard: Any,
) -> None:
    assert (await create(registered_functions, payload)).status_code == 201
    payload["Customer"]["EmailAddress"] = "not-an-email"
    assert (await create(registered_functions, payload)).status_code == 400

    counted = [p for p in telemetry.points() if p.name == "connector.customers.created"]
    assert sorted((p.attributes["status"], p.attributes["outcome"], p.value) for p in counted) == [
        ("201", "created", 1.0),
        ("400", "invalid", 1.0),
    ]
    timed = [p for p in telemetry.points() if p.name == "connector.customers.duration"]
    assert sorted((p.attributes["status"], p.count) for p in timed) == [("201", 1), ("400", 1)]
    records = event_records(log_privacy_guard.records, "create_customer")
    assert [(r["status"], r["outcome"]) for r in records] == [(201, "created"), (400, "invalid")]
    assert all(isinstance(r["duration_ms"], float) and r["correlation_id"] for r in records)
    # The invocation is a server span; the F&O call under it a client span with its route.
    spans = telemetry.spans()
    invocations = [s for s in spans if s.name == "create_customer"]
    assert [dict(s.attributes or {})["http.response.status_code"] for s in invocations] == [201, 400]
    assert any(dict(s.attributes or {}).get("connector.service") == "finance_ops" for s in spans)

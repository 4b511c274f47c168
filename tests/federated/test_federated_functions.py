"""Detection, notify and CreateCustomer through the registered functions with
ENTRA_CREDENTIAL=federated: the managed identity's token is the client assertion, no client secret
exists, and Retail Server and F&O get the app registration's own token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from sandbox import fno
from sandbox.server import Sandbox
from shared.identity import scope_for
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from tests.conftest import event_records
from tests.customers.helpers import body_of
from tests.federated.conftest import create_customer, identity_tokens
from tests.notify.conftest import (
    RecordingProvider,
    consenting_customer,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_detection,
    run_notify,
)

# Every invocation runs at the sandbox's NOW.
pytestmark = pytest.mark.usefixtures("clock")


async def test_detection_signs_in_with_the_managed_identity_and_reads_no_secret(
    registered_functions: dict[str, Any], sandbox: Sandbox, settings: Settings, runtime: Runtime
) -> None:
    assert settings.entra_credential == "federated"
    messages = await run_detection(registered_functions)
    assert messages, "the sandbox has abandoned carts in the default window"
    # One exchange for the whole run: one identity token, one app token.
    assert identity_tokens(sandbox) == 1
    assert sandbox.stats.token_requests[sandbox.client_id] == 1
    # Retail Server got the app registration's token (its relying party), issued for an assertion.
    token = await runtime.tokens.get_token(scope_for(settings.retail_server_audience))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["appid"], claims["appidacr"]) == (sandbox.client_id, "2")
    assert sandbox.stats.token_requests[sandbox.client_id] == 1


async def test_notify_sends_with_the_federated_credential(
    registered_functions: dict[str, Any], sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    poison = await run_notify(registered_functions, queued.body)
    assert poison.get() is None
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert len(recorder.sent) == 1
    assert identity_tokens(sandbox) == 1


async def test_create_customer_with_the_federated_credential(
    registered_functions: dict[str, Any], sandbox: Sandbox, runtime: Runtime, payload: dict[str, Any]
) -> None:
    response = await create_customer(registered_functions, payload)
    assert response.status_code == 201, response.get_body()
    assert fno.stand_in(sandbox).creations == 1
    assert identity_tokens(sandbox) == 1


async def test_every_function_shares_one_identity_token(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    payload: dict[str, Any],
) -> None:
    """The identity's token is fetched once and kept: not once per app token, nor per call."""
    await run_detection(registered_functions)
    cart = own_cart(sandbox, consenting_customer(sandbox, 1))
    await run_notify(registered_functions, (await put_on_ledger(runtime, cart)).body)
    assert (await create_customer(registered_functions, payload)).status_code == 201
    # A refused app token (Retail Server answered 401) is asked for again with the same assertion.
    runtime.tokens.invalidate(scope_for(runtime.settings.retail_server_audience))
    await run_detection(registered_functions)
    assert identity_tokens(sandbox) == 1
    # Two scopes (Retail Server, F&O), and the Retail Server token once more.
    assert sandbox.stats.token_requests[sandbox.client_id] == 3


class TestASeparateFnoApp:
    FNO_APP = "f0f0f0f0-1111-4222-8333-d365f0000001"

    @pytest.fixture
    def federated_overrides(self) -> dict[str, Any]:
        return {"fno_client_id": self.FNO_APP, "fno_client_secret_name": "no-such-secret"}

    @pytest.fixture(autouse=True)
    def fno_app(self, sandbox: Sandbox) -> None:
        # A second app registration, trusted by F&O, that trusts the same identity.
        sandbox.register_app(self.FNO_APP, "unused-secret", relying_party=False)
        sandbox.federate(self.FNO_APP)
        fno.stand_in(sandbox).entra_applications = {self.FNO_APP}

    async def test_it_is_federated_with_the_same_identity_token(
        self,
        registered_functions: dict[str, Any],
        sandbox: Sandbox,
        runtime: Runtime,
        payload: dict[str, Any],
    ) -> None:
        assert await run_detection(registered_functions)
        response = await create_customer(registered_functions, payload)
        assert response.status_code == 201, response.get_body()
        assert sandbox.stats.token_requests[self.FNO_APP] == 1
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
        assert identity_tokens(sandbox) == 1


# ----- refusals: a missing or wrong federation fails the first token, saying what to check


@pytest.fixture
async def fresh_runtime(settings: Settings) -> AsyncIterator[Any]:
    """Build the process runtime for changed settings, as a new instance would."""
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        created = Runtime.create(settings.model_copy(update=overrides))
        made.append(created)
        set_runtime(created)
        return created

    yield make
    set_runtime(None)
    for created in made:
        await created.close()


def _wrong_subject(sandbox: Sandbox) -> str:
    sandbox.unfederate(sandbox.client_id)
    sandbox.federate(sandbox.client_id, subject="00000000-0000-4000-8000-0000000000aa")
    return "AADSTS700213"


def _wrong_issuer(sandbox: Sandbox) -> str:
    sandbox.unfederate(sandbox.client_id)
    sandbox.federate(sandbox.client_id, issuer=f"https://login.microsoftonline.com/{sandbox.tenant_id}/v2.0")
    return "AADSTS700211"


def _wrong_audience(sandbox: Sandbox) -> str:
    sandbox.unfederate(sandbox.client_id)
    sandbox.federate(sandbox.client_id, audiences=["api://AzureADTokenExchangeUSGov"])
    return "AADSTS700212"


def _none(sandbox: Sandbox) -> str:
    sandbox.unfederate(sandbox.client_id)
    return "AADSTS70021"


@pytest.mark.parametrize(
    "misconfigure",
    [_none, _wrong_subject, _wrong_issuer, _wrong_audience],
    ids=["no-credential", "subject", "issuer", "audience"],
)
async def test_a_wrong_federation_fails_notify_naming_the_app_and_the_credential_to_create(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    misconfigure: Any,
) -> None:
    from shared.managed_identity import FederationError

    code = misconfigure(sandbox)
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    with pytest.raises(FederationError) as caught:
        await run_notify(registered_functions, queued.body)
    message = str(caught.value)
    assert code in message
    # What the app registration's federated credential must hold, exactly.
    identity = sandbox.managed_identity
    assert f"app registration {sandbox.client_id}" in message
    assert f"issuer '{sandbox.v2_issuer}'" in message
    assert f"subject '{identity.principal_id}'" in message
    assert "audience 'api://AzureADTokenExchange'" in message
    assert "eyJ" not in message, "never the token itself"
    assert caught.value.reason == "entra_refused"
    assert await ledger_status(runtime, cart) == ("failed", "entra_refused")
    assert recorder.sent == []
    assert not any(route.startswith("GET /rs/") for route in sandbox.stats.requests)


async def test_an_expired_identity_token_is_refused_and_fetched_anew_next_time(
    registered_functions: dict[str, Any], sandbox: Sandbox, runtime: Runtime, fresh_runtime: Any
) -> None:
    from shared.abandoned_carts.detect import DetectionFailedError
    from shared.managed_identity import FederationError

    sandbox.managed_identity.lifetime_seconds = -3600  # the endpoint hands out an expired token
    with pytest.raises(DetectionFailedError, match="AADSTS700024") as caught:
        await run_detection(registered_functions)
    # The failed run's cause is the channel's error: the refusal, saying what happened.
    assert isinstance(caught.value.__cause__, FederationError)
    assert "valid time range" in str(caught.value.__cause__)
    sandbox.managed_identity.lifetime_seconds = 3600
    # MSAL remembers a refused request for a while in-process; a new instance asks again.
    fresh_runtime()
    assert await run_detection(registered_functions)
    assert identity_tokens(sandbox) == 2


async def test_a_wrong_federation_fails_create_customer_as_a_configuration_fault(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    payload: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _wrong_subject(sandbox)
    with caplog.at_level("ERROR"):
        response = await create_customer(registered_functions, payload, **{"Idempotency-Key": "k-fic"})
    assert response.status_code == 502, response.get_body()
    assert body_of(response)["type"].endswith(":upstream-configuration")
    assert sandbox.managed_identity.principal_id not in response.get_body().decode(), "details go to the log"
    faults = [r.getMessage() for r in caplog.records if "configuration fault" in r.getMessage()]
    assert faults, "the operator's log line"
    assert "AADSTS700213" in faults[0]
    assert f"subject '{sandbox.managed_identity.principal_id}'" in faults[0]
    assert fno.stand_in(sandbox).creations == 0


# ----- the managed-identity endpoint


async def test_an_identity_the_app_does_not_have_names_azure_client_id(
    registered_functions: dict[str, Any], sandbox: Sandbox, runtime: Runtime, fresh_runtime: Any
) -> None:
    from shared.abandoned_carts.detect import DetectionFailedError
    from shared.managed_identity import FederatedCredentialError

    fresh_runtime(azure_client_id="0badc0de-0000-4000-8000-000000000000")
    with pytest.raises(DetectionFailedError) as caught:
        await run_detection(registered_functions)
    assert isinstance(caught.value.__cause__, FederatedCredentialError)
    message = str(caught.value.__cause__)
    assert "HTTP 400" in message and "AZURE_CLIENT_ID" in message
    assert sandbox.stats.token_requests[sandbox.client_id] == 0, "Entra ID was not asked"


async def test_a_wrong_identity_header_is_refused(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    fresh_runtime: Any,
) -> None:
    from shared.abandoned_carts.detect import DetectionFailedError
    from shared.identity import TokenError

    monkeypatch.setenv("IDENTITY_HEADER", "stale-value")
    fresh_runtime()
    with pytest.raises(DetectionFailedError, match="HTTP 401") as caught:
        await run_detection(registered_functions)
    assert isinstance(caught.value.__cause__, TokenError)
    assert "IDENTITY_HEADER" in str(caught.value.__cause__)
    assert "stale-value" not in str(caught.value)


async def test_a_failing_identity_endpoint_is_transient_for_the_till(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    payload: dict[str, Any],
    fresh_runtime: Any,
) -> None:
    fresh_runtime(http_max_attempts=2)
    hit = sandbox.faults.add("GET /msi/token", status=503, times=None)
    first = await create_customer(registered_functions, payload, **{"Idempotency-Key": "k-msi"})
    assert first.status_code == 503, first.get_body()
    assert body_of(first)["type"].endswith(":credentials-unavailable")
    assert hit.hits == 2, "the endpoint's failure is retried within HTTP_MAX_ATTEMPTS"
    sandbox.faults.clear()
    # Nothing was held or sent: the till's retry goes through on the same instance.
    again = await create_customer(registered_functions, payload, **{"Idempotency-Key": "k-msi"})
    assert again.status_code == 201, again.get_body()
    assert fno.stand_in(sandbox).creations == 1


async def test_neither_the_identity_header_nor_a_token_reaches_a_log(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    log_privacy_guard: Any,
) -> None:
    await run_detection(registered_functions)
    _wrong_subject(sandbox)
    runtime.tokens.invalidate(scope_for(runtime.settings.retail_server_audience))
    with pytest.raises(Exception, match="AADSTS700213"):
        await run_detection(registered_functions)
    lines: list[str] = log_privacy_guard.lines
    assert any("managed identity" in line for line in lines), "the log records were captured"
    assert not [line for line in lines if sandbox.managed_identity.header in line]
    assert not [line for line in lines if "eyJ" in line], "no JWT in any log record"


async def test_the_identity_token_request_is_a_client_span_counted_beside_entras(
    registered_functions: dict[str, Any],
    sandbox: Sandbox,
    runtime: Runtime,
    fresh_runtime: Any,
    telemetry: Any,
    log_privacy_guard: Any,
) -> None:
    from sandbox.telemetry import span_text

    telemetry.clear()
    await run_detection(registered_functions)
    fresh_runtime(http_max_attempts=1)
    sandbox.faults.add("GET /msi/token", status=500, times=None)
    with pytest.raises(Exception, match="managed-identity endpoint failed"):
        await run_detection(registered_functions)
    sandbox.faults.clear()

    counted = sorted(
        (p.attributes["service"], p.attributes["result"], p.value)
        for p in telemetry.points()
        if p.name == "connector.tokens.acquired"
    )
    assert counted == [
        ("managed_identity", "managed_identity_unavailable", 1.0),
        ("managed_identity", "ok", 1.0),
        ("retail_server", "ok", 1.0),
    ]
    identity = [s for s in telemetry.spans() if s.name == "GET /msi/token"]
    assert [dict(s.attributes or {})["connector.service"] for s in identity] == ["managed_identity"] * 2
    assert [dict(s.attributes or {})["connector.status"] for s in identity] == [
        "ok",
        "managed_identity_unavailable",
    ]
    entra = [s for s in telemetry.spans() if s.name == "POST /{tenant}/oauth2/v2.0/token"]
    assert [dict(s.attributes or {})["connector.status"] for s in entra] == ["ok"]
    [failure] = event_records(log_privacy_guard.records, "token_failure")
    assert (failure["service"], failure["error"]) == (
        "managed_identity",
        "managed_identity_unavailable",
    )
    header = sandbox.managed_identity.header
    assert not [s for s in telemetry.spans() if header in span_text(s) or "eyJ" in span_text(s)]

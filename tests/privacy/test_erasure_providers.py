"""Erasure reaches past the connector: the email provider erases too (Emarsys deletes the contact,
the webhook receiver gets a signed customer.erased), previews go, and the answer says what each
place did and what stays where the connector cannot reach (SendGrid, Commerce, a dry run's
provider)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox import emarsys, sendgrid, webhook
from sandbox.server import Sandbox
from shared.email.base import EmailMessage, Recipient
from shared.email.preview import PreviewProvider
from shared.privacy.erasure import COMMERCE_RETAINS
from shared.privacy.suppression import SuppressionList
from shared.runtime import Runtime, set_runtime
from tests.conftest import sandbox_settings
from tests.privacy.helpers import API_CLIENT_ID, bearer, call, erasure_request
from tests.privacy.test_erasure import record, seeded

UseProvider = Callable[..., Awaitable[Runtime]]
DELETE_ROUTE = "/emarsys/api/v3/contact/delete"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Same name as the shared fixture, so the log privacy guard checks these tests too.
    async with Sandbox(
        seed=42, extensions=[emarsys.add_routes, sendgrid.add_routes, webhook.add_routes]
    ) as running:
        yield running


@pytest.fixture
async def use_provider(
    sandbox: Sandbox, runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[UseProvider]:
    """Swap in a runtime that sends through a stand-in: its app settings and secrets as a local
    run has them in the environment."""
    made: list[Runtime] = []

    async def use(env: dict[str, str], **overrides: Any) -> Runtime:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = sandbox_settings(
            sandbox,
            tmp_path,
            operating_unit_numbers="128,129",
            api_client_id=API_CLIENT_ID,
            preview_dir=tmp_path / "previews",
            **overrides,
        )
        created = Runtime.create(settings)
        made.append(created)
        set_runtime(created)
        return created

    yield use
    set_runtime(runtime)
    for created in made:
        await created.close()


async def erase(functions: dict[str, Any], sandbox: Sandbox, body: dict[str, Any]) -> Any:
    return await call(functions, "privacy_erasure", erasure_request(body, **bearer(sandbox)))


@pytest.mark.parametrize("auth", ["oauth", "wsse"])
async def test_emarsys_deletes_the_contact(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider, auth: str
) -> None:
    runtime = await use_provider(emarsys.env(sandbox, auth=auth))
    stand_in = emarsys.stand_in(sandbox)
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    assert stand_in.find_contact("3", email) is not None

    response = await erase(registered_functions, sandbox, {"email": email, "customerAccount": account})
    assert response.status_code == 200, response.get_body()
    body = json.loads(response.get_body())
    assert body["provider"] == {
        "name": "emarsys",
        "action": "deleted",
        "detail": "the Emarsys contact and all its data were deleted",
    }
    assert body["ledgerEntriesDeleted"] == 2 and body["retained"] == [COMMERCE_RETAINS]
    assert stand_in.find_contact("3", email) is None
    assert stand_in.deletions == [("3", [email])]

    again = json.loads((await erase(registered_functions, sandbox, {"email": email})).get_body())
    assert again["provider"]["action"] == "not_found"


async def test_emarsys_keyed_by_account_needs_the_account(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    await use_provider({**emarsys.env(sandbox), "EMARSYS_KEY_ID": "4711"})
    email, _ = seeded(sandbox)
    response = await erase(registered_functions, sandbox, {"email": email})
    provider = json.loads(response.get_body())["provider"]
    assert provider["action"] == "skipped" and "customerAccount" in provider["detail"]
    assert emarsys.stand_in(sandbox).deletions == []


async def test_an_emarsys_failure_is_a_502_after_the_connectors_own_erasure_and_a_retry_finishes(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    runtime = await use_provider(emarsys.env(sandbox))
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    sandbox.faults.add(DELETE_ROUTE, status=500, times=None)

    failed = await erase(registered_functions, sandbox, {"email": email, "customerAccount": account})
    assert failed.status_code == 502
    problem = json.loads(failed.get_body())
    assert problem["type"].endswith(":provider-erasure-failed") and email not in failed.get_body().decode()
    assert await SuppressionList(runtime.store).contains(email)
    assert await runtime.store.query("ledger", equals={"customerId": account}) == []
    assert emarsys.stand_in(sandbox).find_contact("3", email) is not None

    sandbox.faults.clear()
    done = await erase(registered_functions, sandbox, {"email": email, "customerAccount": account})
    assert done.status_code == 200
    assert json.loads(done.get_body())["provider"]["action"] == "deleted"
    assert emarsys.stand_in(sandbox).find_contact("3", email) is None


async def test_duplicate_emarsys_contacts_are_not_reported_as_deleted(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    await use_provider(emarsys.env(sandbox))
    email, _ = seeded(sandbox)
    emarsys.stand_in(sandbox).add_contact(email.upper())
    response = await erase(registered_functions, sandbox, {"email": email})
    assert response.status_code == 502


async def test_the_webhook_receiver_gets_a_signed_customer_erased_event(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    await use_provider(webhook.env(sandbox))
    email, account = seeded(sandbox)
    response = await erase(registered_functions, sandbox, {"email": email, "customerAccount": account})
    body = json.loads(response.get_body())
    assert body["provider"]["name"] == "webhook" and body["provider"]["action"] == "notified"
    # The receiver records only what carries a valid signature.
    events = webhook.receiver(sandbox).events_of("customer.erased")
    assert [event["data"] for event in events] == [{"email": email, "customer_id": account}]
    await erase(registered_functions, sandbox, {"customerAccount": account})
    assert len(webhook.receiver(sandbox).events_of("customer.erased")) == 2


async def test_sendgrid_is_named_as_keeping_what_the_connector_cannot_delete(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    await use_provider(sendgrid.env(sandbox))
    email, _ = seeded(sandbox)
    body = json.loads((await erase(registered_functions, sandbox, {"email": email})).get_body())
    assert body["provider"]["action"] == "not_supported"
    assert body["retained"][0] == COMMERCE_RETAINS
    assert body["retained"][1].startswith("SendGrid keeps the recipient's email activity")


async def test_in_a_dry_run_the_configured_provider_is_named_as_not_reached(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    await use_provider({**emarsys.env(sandbox), "DRY_RUN": "true"})
    email, _ = seeded(sandbox)
    body = json.loads((await erase(registered_functions, sandbox, {"email": email})).get_body())
    assert body["provider"]["action"] == "not_applicable"
    assert "DRY_RUN is on" in body["retained"][1] and "EMAIL_PROVIDER=emarsys" in body["retained"][1]
    assert emarsys.stand_in(sandbox).deletions == []


async def test_the_accounts_previews_are_deleted(
    registered_functions: dict[str, Any], sandbox: Sandbox, use_provider: UseProvider
) -> None:
    runtime = await use_provider({})
    email, account = seeded(sandbox)
    previews = PreviewProvider(runtime.settings.preview_dir)
    for key, who in (("c1-1-1", account), ("c2-1-1", account), ("c3-1-1", "SOMEONE-ELSE")):
        recipient = Recipient(email=email if who == account else "other@example.org", customer_id=who)
        await previews.send(EmailMessage(dedup_key=key, recipient=recipient, data={}))

    body = json.loads((await erase(registered_functions, sandbox, {"customerAccount": account})).get_body())
    assert body["previewsDeleted"] == 2
    left = [path.name for path in runtime.settings.preview_dir.iterdir()]
    assert len(left) == 2 and all(name.startswith("c3-1-1.") for name in left)

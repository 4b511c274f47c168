"""SendGrid and the signed webhook against their stand-ins, over real HTTPS."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from sandbox import sendgrid, webhook
from sandbox.server import Sandbox
from shared.email.base import (
    PartialSendError,
    ProviderConfigurationError,
    ProviderError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    SendResult,
)
from shared.email.sendgrid import SendGridProvider
from shared.email.webhook import WebhookProvider, sign
from shared.http import HttpClient, RetryPolicy, new_session
from shared.secrets import CachedSecrets, EnvironmentSecrets

from .conftest import customer_emails, message


def sendgrid_provider(http: HttpClient, secrets: CachedSecrets, sandbox: Sandbox) -> SendGridProvider:
    return SendGridProvider(
        http,
        secrets,
        api_url=sendgrid.api_url(sandbox),
        api_key_secret_name="sendgrid-api-key",
        template_id=sendgrid.TEMPLATE_ID,
        from_email=sendgrid.FROM_EMAIL,
        unsubscribe_group_id=42,
    )


def webhook_provider(http: HttpClient, secrets: CachedSecrets, sandbox: Sandbox) -> WebhookProvider:
    return WebhookProvider(
        http, secrets, url=webhook.url(sandbox), signing_secret_name="webhook-signing-secret"
    )


async def test_sendgrid_sends_dynamic_template_data_and_returns_the_message_id(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    stand_in = sendgrid.stand_in(sandbox)
    email, first, last = customer_emails(sandbox, 1)[0]
    result = await sendgrid_provider(http, secrets, sandbox).send(
        message(email, "cart-1:v1:1", first_name=first, last_name=last)
    )
    assert result.status == "sent"
    [mail] = stand_in.mails
    assert result.provider_ids["x_message_id"] == mail.message_id
    assert (mail.to, mail.template_id) == (email, sendgrid.TEMPLATE_ID)
    assert mail.dynamic_template_data["firstName"] == first
    assert mail.dynamic_template_data["products"][0]["lineAmount"] == "59.90"
    # Only the opaque key travels as a custom arg: SendGrid keeps those as non-personal data.
    assert mail.custom_args == {"dedup_key": "cart-1:v1:1"}


async def test_sendgrid_batches_at_1000_and_never_repeats_an_address_in_one_request(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    stand_in = sendgrid.stand_in(sandbox)
    messages = [message(f"shopper{i}@example.com", f"cart-{i}:v1:1") for i in range(1001)]
    messages.insert(1, message("shopper0@example.com", "cart-0:v1:2"))
    results = await sendgrid_provider(http, secrets, sandbox).send_many(messages)
    assert [r.status for r in results] == ["sent"] * 1002
    assert [r.provider_ids["dedup_key"] for r in results] == [m.dedup_key for m in messages]
    # [shopper0], then [shopper0 again .. 999 more], then the rest.
    assert stand_in.requests == 3
    assert len(stand_in.mails) == 1002


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ProviderRejectedError),
        (401, ProviderConfigurationError),
        (413, ProviderRejectedError),
        (429, ProviderTransientError),
        (503, ProviderTransientError),
    ],
)
async def test_sendgrid_error_mapping(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, status: int, error: type[Exception]
) -> None:
    sandbox.faults.add(
        "POST /sendgrid/v3/mail/send",
        status=status,
        times=None,
        body='{"errors":[{"message":"nope for someone@example.com","field":"personalizations.0.to"}]}',
        headers={"X-RateLimit-Reset": "30"},
    )
    with pytest.raises(error) as caught:
        await sendgrid_provider(http, secrets, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))
    assert "someone@example.com" not in str(caught.value)
    if status == 429:
        assert isinstance(caught.value, ProviderTransientError)
        assert caught.value.retry_after == 30


async def test_sendgrid_wrong_key_is_a_configuration_error(sandbox: Sandbox, http: HttpClient) -> None:
    wrong = CachedSecrets(EnvironmentSecrets({"SENDGRID_API_KEY": "SG.wrong"}), ttl_seconds=60)
    with pytest.raises(ProviderConfigurationError, match="sendgrid-api-key"):
        await sendgrid_provider(http, wrong, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))
    assert sendgrid.stand_in(sandbox).mails == []


def test_webhook_signature_follows_standard_webhooks() -> None:
    # HMAC-SHA256 over "id.timestamp.body" with the base64-decoded whsec_ key, base64 encoded.
    import base64
    import hashlib
    import hmac

    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest()).decode()
    assert sign(secret, "msg_1", 1_700_000_000, b"{}") == "v1," + expected
    assert sign("plain-secret", "msg_1", 1, b"{}") != sign("other-secret", "msg_1", 1, b"{}")


async def test_webhook_delivers_a_signed_message_and_repeats_are_dropped_by_id(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    receiver = webhook.receiver(sandbox)
    email = customer_emails(sandbox, 1)[0][0]
    provider = webhook_provider(http, secrets, sandbox)
    first = await provider.send(message(email, "cart-1:v1:1"))
    again = await provider.send(message(email, "cart-1:v1:1"))
    assert (first.status, again.status) == ("sent", "sent")
    [delivered] = receiver.received
    assert delivered["type"] == "abandoned_cart.email"
    assert delivered["data"]["dedup_key"] == "cart-1:v1:1"
    assert delivered["data"]["recipient"]["email"] == email
    assert delivered["data"]["data"]["products"][0]["name"] == "Trail shoe"
    assert receiver.duplicates == 1


async def test_webhook_with_the_wrong_secret_is_a_configuration_error(
    sandbox: Sandbox, http: HttpClient
) -> None:
    wrong = CachedSecrets(EnvironmentSecrets({"WEBHOOK_SIGNING_SECRET": "whsec_d3Jvbmc="}), ttl_seconds=60)
    with pytest.raises(ProviderConfigurationError, match="401"):
        await webhook_provider(http, wrong, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))
    assert webhook.receiver(sandbox).received == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ProviderRejectedError),
        (422, ProviderRejectedError),
        (429, ProviderTransientError),
        (500, ProviderTransientError),
    ],
)
async def test_webhook_error_mapping(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets, status: int, error: type[Exception]
) -> None:
    sandbox.faults.add("POST /webhook/receive", status=status, times=None)
    with pytest.raises(error):
        await webhook_provider(http, secrets, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))


async def test_webhook_batch_reports_a_refused_message_as_failed(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    (a, _, _), (b, _, _) = customer_emails(sandbox, 2)
    sandbox.faults.add("POST /webhook/receive", status=422, times=1)
    results = await webhook_provider(http, secrets, sandbox).send_many(
        [message(a, "cart-a:v1:1"), message(b, "cart-b:v1:1")]
    )
    assert sorted(r.status for r in results) == ["failed", "sent"]
    assert len(webhook.receiver(sandbox).received) == 1


# ----- "maybe sent" against "certainly not sent" (DESIGN invariant 9)


@pytest.fixture
async def impatient(sandbox: Sandbox) -> AsyncIterator[HttpClient]:
    """A client that gives up after half a second, so a held answer times out quickly."""
    session = new_session(total_timeout=0.5, connect_timeout=0.5, ssl_context=sandbox.client_ssl_context())
    try:
        yield HttpClient(session, RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.01))
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"timeout_after": True}, "timeout"),
        ({"reset_after": True}, "connection_lost"),
        ({"status": 500}, "http_500"),
        ({"status": 502}, "http_502"),
        ({"status": 504}, "http_504"),
    ],
    ids=["202-after-the-timeout", "reset-after-the-request", "500", "502", "504"],
)
async def test_sendgrid_says_when_a_send_may_have_gone_out(
    sandbox: Sandbox, impatient: HttpClient, secrets: CachedSecrets, fault: dict[str, object], reason: str
) -> None:
    sandbox.faults.add("POST /sendgrid/v3/mail/send", **fault)  # type: ignore[arg-type]
    with pytest.raises(ProviderUncertainError) as caught:
        await sendgrid_provider(impatient, secrets, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))
    assert caught.value.reason == reason
    # Never asked twice within the call: SendGrid cannot drop a repeat.
    assert sendgrid.stand_in(sandbox).requests == (1 if "status" not in fault else 0)
    assert sandbox.stats.requests["POST /sendgrid/v3/mail/send"] == 1


async def test_sendgrid_unreachable_is_certainly_not_sent(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    provider = SendGridProvider(
        http,
        secrets,
        api_url=f"https://127.0.0.1:{closed_port}",
        api_key_secret_name="sendgrid-api-key",
        template_id=sendgrid.TEMPLATE_ID,
        from_email=sendgrid.FROM_EMAIL,
    )
    with pytest.raises(ProviderTransientError) as caught:
        await provider.send(message(customer_emails(sandbox, 1)[0][0]))
    assert not isinstance(caught.value, ProviderUncertainError)


async def test_sendgrid_batch_keeps_the_accepted_part_when_a_later_request_fails(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    """One address twice splits the batch into two requests; the rate limit refuses the second
    (429). The first request's messages went out and must come back as sent, not as the failure."""
    emails = [email for email, _, _ in customer_emails(sandbox, 2)]
    messages = [message(emails[0], "k-1"), message(emails[1], "k-2"), message(emails[0], "k-3")]
    sendgrid.stand_in(sandbox).rate_limit = 1
    provider = sendgrid_provider(http, secrets, sandbox)

    with pytest.raises(PartialSendError) as caught:
        await provider.send_many(messages)

    first, second, third = caught.value.outcomes
    assert isinstance(first, SendResult) and isinstance(second, SendResult)
    assert isinstance(third, ProviderTransientError) and not isinstance(third, ProviderUncertainError)
    assert [m.custom_args["dedup_key"] for m in sendgrid.stand_in(sandbox).mails] == ["k-1", "k-2"]


async def test_webhook_5xx_and_a_lost_answer_are_uncertain_but_retried_with_the_same_id(
    sandbox: Sandbox, impatient: HttpClient, secrets: CachedSecrets
) -> None:
    receiver = webhook.receiver(sandbox)
    sandbox.faults.add("POST /webhook/receive", timeout_after=True)
    result = await webhook_provider(impatient, secrets, sandbox).send(
        message(customer_emails(sandbox, 1)[0][0])
    )
    assert result.status == "sent"
    assert (len(receiver.received), receiver.deliveries) == (1, 2)
    sandbox.faults.add("POST /webhook/receive", status=500, times=None)
    with pytest.raises(ProviderUncertainError, match="500"):
        await webhook_provider(impatient, secrets, sandbox).send(
            message(customer_emails(sandbox, 1)[0][0], "k-9")
        )


async def test_sendgrid_batch_after_an_uncertain_request_tries_no_more_and_says_so_per_message(
    sandbox: Sandbox, impatient: HttpClient, secrets: CachedSecrets
) -> None:
    emails = [email for email, _, _ in customer_emails(sandbox, 2)]
    messages = [message(emails[0], "k-1"), message(emails[1], "k-2"), message(emails[0], "k-3")]
    sandbox.faults.add("POST /sendgrid/v3/mail/send", reset_after=True)

    with pytest.raises(PartialSendError) as caught:
        await sendgrid_provider(impatient, secrets, sandbox).send_many(messages)

    first, second, third = caught.value.outcomes
    assert isinstance(first, ProviderUncertainError) and second is first
    # The second request was never made: certainly not sent, so it may be retried.
    assert isinstance(third, ProviderTransientError) and not isinstance(third, ProviderUncertainError)
    assert sendgrid.stand_in(sandbox).requests == 1


async def test_webhook_errors_name_the_setting_never_the_receivers_path(
    sandbox: Sandbox, http: HttpClient, secrets: CachedSecrets
) -> None:
    # Receivers often carry a token in WEBHOOK_URL's path; an error (and so a log line) must not.
    sandbox.faults.add("POST /webhook/receive", stream_bytes=http.max_response_bytes * 2)
    with pytest.raises(ProviderError) as raised:
        await webhook_provider(http, secrets, sandbox).send(message(customer_emails(sandbox, 1)[0][0]))
    assert "/webhook/receive" not in str(raised.value)
    assert "WEBHOOK_URL" in str(raised.value)

from __future__ import annotations

import logging

import pytest

from shared.privacy.redaction import install, redact


@pytest.mark.parametrize(
    "text",
    [
        "customer jane.doe+promo@example.co.uk opened",
        "Authorization: Bearer abcdefghijklmnop.qrstu",
        "Authorization: id_token eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl",
        "client_secret=s3cr3t-value&grant_type=client_credentials",
        "call +1 (425) 555-0100 now",
    ],
)
def test_sensitive_values_are_masked(text: str) -> None:
    cleaned = redact(text)
    for secret in ("jane.doe", "abcdefghijklmnop", "eyJhdWQiOiJ4In0", "s3cr3t-value", "555-0100"):
        assert secret not in cleaned


def test_ids_and_timestamps_survive() -> None:
    text = "cart 0a1b2c3d version 17 oun 067 at 2026-11-22T10:00:00Z took 1234 ms"
    assert redact(text) == text


def test_every_logger_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install()
    with caplog.at_level(logging.INFO):
        logging.getLogger("shared.some.module").info("sending to %s", "someone@example.com")
        try:
            raise ValueError("bad address other@example.com")
        except ValueError:
            logging.getLogger("third.party").exception("failed")
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "someone@example.com" not in text and "other@example.com" not in text
    assert "[email]" in text


@pytest.mark.parametrize(
    "text",
    [
        "correlation id da5ac034-1234-4567-8ce5-393327de5793",
        "correlation id 12345678-1234-4567-8123-123456789012",
        "token for https://127.0.0.1:33323/fno/.default",
        "window 2026-12-01 .. 2026-12-02",
        "at 2026-12-01T20:06:43.408523Z",
    ],
)
def test_ids_addresses_and_dates_are_not_phone_numbers(text: str) -> None:
    assert redact(text) == text


def test_a_phone_number_beside_an_id_is_still_masked() -> None:
    text = "customer +1 425 555 0100 (request 12345678-1234-4567-8123-123456789012)"
    assert redact(text) == "customer [number] (request 12345678-1234-4567-8123-123456789012)"

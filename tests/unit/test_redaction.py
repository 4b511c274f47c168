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


@pytest.mark.parametrize(
    "text",
    [
        "cart x: product 68719493156 not found on channel 128",
        "product 68719493156",
        "Product: 68719493156",
        "products 68719493156",
        "productId=68719493156",
        "RecordId 5637144592",
        "record 5637144592 of catalog 5637145326, item 000000123456",
        '{"channelId": 5637144592, "productId":68719493156}',
        '{"CatalogId": "5637145326", "ItemId":"0000123456789"}',
        "GetByIds channelId=5637144592&catalogId=5637145326",
        "ChannelID 5637144592",
        "record_id=5637144592",
        "item 2026-12-01",
    ],
)
def test_ids_after_an_id_word_are_not_phone_numbers(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +1 425 555 0100", "call [number]"),
        ("phone 4255550100", "phone [number]"),
        ('{"Phone": "4255550100"}', '{"Phone": "[number]"}'),
        ("product 68719493156 for +1 425 555 0100", "product 68719493156 for [number]"),
        (
            '{"productId": 68719493156, "mobile": "+14255550100"}',
            '{"productId": 68719493156, "mobile": "[number]"}',
        ),
        # Words that merely end in "id" are not id keys.
        ("paid 4255550100", "paid [number]"),
        ("VOID 4255550100", "VOID [number]"),
        ("android 4255550100", "android [number]"),
        ("reproduction 4255550100", "reproduction [number]"),
        ("lineitem 4255550100", "lineitem [number]"),
        # An id is one unbroken digit run: a formatted number after an id word is still a phone.
        ("product 425 555 0100", "product [number]"),
        ("item (425) 555-0100", "item ([number]"),
    ],
)
def test_phone_numbers_stay_masked_beside_id_words(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_addresses_inside_long_bodies_are_still_found() -> None:
    body = "x" * 20_000 + " reply from person.name+tag@example.co.uk: " + "y" * 20_000
    redacted = redact(body)
    assert "[email]" in redacted and "person.name" not in redacted
    assert redact("a@b.example,c@d.example") == "[email],[email]"

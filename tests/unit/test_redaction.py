from __future__ import annotations

import logging
import re

import pytest

from shared.abandoned_carts import observe
from shared.abandoned_carts.outcome import Outcome
from shared.privacy import redaction
from shared.privacy.redaction import ALL_PATTERNS, MAX_MESSAGE_CHARS, install, redact
from tests.regex_bounds import UNBOUNDED, quantifier_bounds


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
    body = "x" * 7_000 + " reply from person.name+tag@example.co.uk: " + "y" * 7_000
    redacted = redact(body)
    assert "[email]" in redacted and "person.name" not in redacted
    assert redact("a@b.example,c@d.example") == "[email],[email]"


def test_an_address_at_the_end_of_a_long_url_is_found() -> None:
    # A local part is at most 64 characters, but the run of characters before the @ can be longer.
    url = "GET https://shop.example/" + "category/" * 40 + "?utm=x&to=jane.doe@example.com done"
    redacted = redact(url)
    assert "jane.doe" not in redacted and "example.com" not in redacted
    assert redacted.startswith("GET https://shop.example/category/")


# ----- bounds (invariant 11): linear patterns, bounded messages. Timing is in benchmarks/.


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: p.pattern[:40])
def test_every_quantifier_is_bounded(pattern: re.Pattern[str]) -> None:
    repeats = quantifier_bounds(pattern)
    assert repeats, "the walk found no quantifier: the parser's shape changed"
    unbounded = [r for r in repeats if r[1] == UNBOUNDED or r[1] > MAX_MESSAGE_CHARS]
    assert not unbounded, f"unbounded quantifier(s) {unbounded} in {pattern.pattern!r}"


def test_the_bound_check_sees_an_unbounded_quantifier() -> None:
    assert (1, UNBOUNDED) in quantifier_bounds(re.compile(r"(?:a|(?=b+))[\d ]{7,}\d"))


# 1 MB that made a pattern backtrack over the rest of the text from every position (the phone
# pattern took 8 s for 48 KB of " 1."), one text per pattern.
ADVERSARIAL = {
    "phone": " 1." * 350_000,
    "jwt": "eyJ" * 350_000,
    "bearer": "bearer " * 150_000,
    "secret": "secret=" * 150_000,
    "email": "a@" + "a." * 524_288,
    "id word then spaces": "productId" + " " * 1_048_576,
    "digits": "1-" * 524_288,
    "timestamp": "2026-12-01T20:06:43." + "1" * 1_048_576,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_a_long_message_is_cut_before_redaction(text: str) -> None:
    redacted = redact(text)
    marker = re.search(r" \[truncated: (\d+) more characters\]\Z", redacted)
    assert marker is not None
    kept = len(redacted) - len(marker.group())
    assert int(marker.group(1)) >= len(text) - MAX_MESSAGE_CHARS
    assert kept <= MAX_MESSAGE_CHARS


def test_a_cut_never_leaves_half_an_address() -> None:
    # The cut would fall inside the domain, leaving "jane.doe@exam", which no pattern recognises.
    text = "x" * (MAX_MESSAGE_CHARS - 13) + "jane.doe@example.com and more"
    assert "jane.doe@" not in redact(text)
    spaced = "word " * (MAX_MESSAGE_CHARS // 5) + "jane.doe@example.com"
    assert "jane" not in redact(spaced[: MAX_MESSAGE_CHARS + 8] + " tail")


def test_a_message_within_the_limit_is_not_cut() -> None:
    text = "cart 0a1b2c3d " * (MAX_MESSAGE_CHARS // 14)
    assert len(text) <= MAX_MESSAGE_CHARS
    assert redact(text) == text


def test_custom_dimensions_are_never_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Structured fields (ids, counts, versions) go in ``extra=``, out of the redaction's way: in a
    message, a long cart version (an int64) looks like a phone number and is masked."""
    assert redaction.redact('{"cartVersion": 5637144576}') == '{"cartVersion": [number]}'
    outcome = Outcome("sent", None, "c-0001", 5637144576, 1)
    with caplog.at_level(logging.INFO, logger="shared"):
        logging.getLogger("shared.abandoned_carts.notify").info(
            "notify outcome", extra=observe.outcome_record(outcome, oun="128", provider="preview")
        )
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "notify_outcome"]
    assert record.getMessage() == "notify outcome"
    assert (record.cart_id, record.cart_version, record.step) == ("c-0001", 5637144576, 1)

"""Unsubscribe tokens: the format, the seal, the expiry, what is (not) in them, the version-1
links of emails already sent, and the secret's minimum length."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.privacy.suppression import email_hash
from shared.privacy.tokens import (
    MIN_SECRET_BYTES,
    InvalidTokenError,
    UnsubscribeClaims,
    WeakSecretError,
    sign,
    token_for,
    verify,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cret-for-tests-0123456789abcdef"  # 32 bytes


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def version_1(claims: Any, secret: str = SECRET) -> str:
    """A token as the connector made them before version 2 (the links in emails already sent)."""
    body = _b64e(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64e(mac)}"


def test_a_token_holds_no_readable_identifier() -> None:
    token = token_for(" Ada@Example.ORG ", secret=SECRET, now=NOW, days=365)
    assert token.startswith("v2.") and "=" not in token and len(token) == 94
    raw = _b64(token.removeprefix("v2."))
    hashed = email_hash("ada@example.org")
    expiry = int((NOW + timedelta(days=365)).timestamp()).to_bytes(8, "big")
    # Neither the hash (hex or raw), nor the address, nor the expiry: the payload is encrypted.
    for needle in (hashed.encode(), bytes.fromhex(hashed)[:8], b"ada@example.org", expiry, b'"e"'):
        assert needle not in raw
    assert hashed not in token
    expires = int((NOW + timedelta(days=365)).timestamp())
    assert verify(token, SECRET, now=NOW) == UnsubscribeClaims(hashed, expires)


def test_two_tokens_for_one_address_differ() -> None:
    first = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    second = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    assert first != second
    assert verify(first, SECRET, now=NOW) == verify(second, SECRET, now=NOW)


def test_a_token_sealed_with_another_secret_is_refused() -> None:
    token = token_for("ada@example.org", secret="another-secret-of-at-least-32-bytes", now=NOW, days=1)
    with pytest.raises(InvalidTokenError, match="signature"):
        verify(token, SECRET, now=NOW)


@pytest.mark.parametrize("position", [3, 10, 40, 93])
def test_a_changed_token_is_refused(position: int) -> None:
    # Position 93 is the last character, whose low bits base64 leaves unused: a decoder that
    # accepts a non-canonical spelling would let this change through, one token in sixteen.
    token = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    with pytest.raises(InvalidTokenError):
        verify(changed, SECRET, now=NOW)


def test_an_expired_token_is_refused_and_says_so() -> None:
    token = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    assert verify(token, SECRET, now=NOW + timedelta(hours=23)).email_hash == email_hash("ada@example.org")
    with pytest.raises(InvalidTokenError) as caught:
        verify(token, SECRET, now=NOW + timedelta(days=1))
    assert caught.value.expired


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "!!!.???", "x" * 2000 + ".y", "eyJ2IjoxfQ", ".", "abc.", "v2.", "v2.AAAA", "v2.!!"],
)
def test_malformed_tokens_are_refused_without_quoting_them(token: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        verify(token, SECRET, now=NOW)
    assert not token or len(token) < 4 or token not in str(caught.value)


def test_version_1_links_in_emails_already_sent_work_until_they_expire() -> None:
    hashed = email_hash("ada@example.org")
    expires = int((NOW + timedelta(days=10)).timestamp())
    token = version_1({"v": 1, "e": hashed, "c": "C0042", "x": expires})
    assert verify(token, SECRET, now=NOW) == UnsubscribeClaims(hashed, expires)
    with pytest.raises(InvalidTokenError) as caught:
        verify(token, SECRET, now=NOW + timedelta(days=10))
    assert caught.value.expired
    with pytest.raises(InvalidTokenError, match="signature"):
        verify(version_1({"v": 1, "e": hashed, "c": "C0042", "x": expires}, "x" * 40), SECRET, now=NOW)


def test_a_version_1_body_of_the_wrong_shape_is_refused() -> None:
    for claims in (
        {"v": 2, "e": "0" * 64, "c": "C", "x": 2**40},
        {"v": 1, "e": "x", "c": "C", "x": 2**40},
        {"v": 1, "e": "0" * 64, "c": "C", "x": True},
        [1, 2],
    ):
        with pytest.raises(InvalidTokenError):
            verify(version_1(claims), SECRET, now=NOW)


def test_sign_refuses_anything_but_a_hash() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        sign(UnsubscribeClaims("ada@example.org", 1), SECRET)


@pytest.mark.parametrize("secret", ["", "short", "x" * (MIN_SECRET_BYTES - 1), "é" * 15])
def test_a_secret_under_32_bytes_is_refused_for_signing_and_checking(secret: str) -> None:
    with pytest.raises(WeakSecretError, match="32 bytes"):
        token_for("ada@example.org", secret=secret, now=NOW, days=1)
    good = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    with pytest.raises(WeakSecretError):
        verify(good, secret, now=NOW)


def test_a_secret_of_32_bytes_is_enough() -> None:
    secret = "é" * 16  # 16 characters, 32 bytes in UTF-8
    token = token_for("ada@example.org", secret=secret, now=NOW, days=1)
    assert verify(token, secret, now=NOW).email_hash == email_hash("ada@example.org")


def test_a_token_spelled_non_canonically_is_refused() -> None:
    token = token_for("ada@example.org", secret=SECRET, now=NOW, days=1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    # The same bytes, other unused low bits in the last character.
    twins = [c for c in alphabet if alphabet.index(c) >> 2 == last >> 2 and c != token[-1]]
    for twin in twins:
        with pytest.raises(InvalidTokenError):
            verify(token[:-1] + twin, SECRET, now=NOW)

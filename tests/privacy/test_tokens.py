"""Signed unsubscribe tokens: the format, the signature, the expiry, and what is (not) in them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.privacy.suppression import email_hash
from shared.privacy.tokens import InvalidTokenError, UnsubscribeClaims, sign, token_for, verify

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cret-for-tests"


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_token_is_body_dot_signature_with_the_hash_account_and_expiry() -> None:
    token = token_for(" Ada@Example.ORG ", "C0042", secret=SECRET, now=NOW, days=365)
    body, signature = token.split(".")
    assert "=" not in token and "@" not in token
    claims = json.loads(_b64(body))
    assert claims == {
        "v": 1,
        "e": email_hash("ada@example.org"),
        "c": "C0042",
        "x": int((NOW + timedelta(days=365)).timestamp()),
    }
    assert len(_b64(signature)) == 32  # HMAC-SHA256
    assert verify(token, SECRET, now=NOW) == UnsubscribeClaims(
        email_hash("ada@example.org"), "C0042", claims["x"]
    )


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = token_for("ada@example.org", "C1", secret="other", now=NOW, days=1)
    with pytest.raises(InvalidTokenError, match="signature"):
        verify(token, SECRET, now=NOW)


def test_a_changed_body_is_refused() -> None:
    token = token_for("ada@example.org", "C1", secret=SECRET, now=NOW, days=1)
    body, signature = token.split(".")
    claims = json.loads(_b64(body))
    claims["e"] = email_hash("eve@example.org")
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidTokenError):
        verify(f"{forged}.{signature}", SECRET, now=NOW)


def test_an_expired_token_is_refused_and_says_so() -> None:
    token = token_for("ada@example.org", "C1", secret=SECRET, now=NOW, days=1)
    assert verify(token, SECRET, now=NOW + timedelta(hours=23)).customer_account == "C1"
    with pytest.raises(InvalidTokenError) as caught:
        verify(token, SECRET, now=NOW + timedelta(days=1))
    assert caught.value.expired


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "!!!.???", "x" * 2000 + ".y", "eyJ2IjoxfQ", ".", "abc."],
)
def test_malformed_tokens_are_refused_without_quoting_them(token: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        verify(token, SECRET, now=NOW)
    assert not token or len(token) < 3 or token not in str(caught.value)


def test_a_signed_body_of_the_wrong_shape_is_refused() -> None:
    import hashlib
    import hmac

    for claims in (
        {"v": 2, "e": "0" * 64, "c": "C", "x": 2**40},
        {"v": 1, "e": "x", "c": "C", "x": 2**40},
        {"v": 1, "e": "0" * 64, "c": 5, "x": 2**40},
        {"v": 1, "e": "0" * 64, "c": "C", "x": True},
        [1, 2],
    ):
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        with pytest.raises(InvalidTokenError):
            verify(f"{body}.{signature}", SECRET, now=NOW)


def test_sign_refuses_anything_but_a_hash() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        sign(UnsubscribeClaims("ada@example.org", "C1", 1), SECRET)

"""Signed unsubscribe tokens: the link in the email proves, by itself, which address to suppress.

A token is ``base64url(JSON) "." base64url(HMAC-SHA256(secret, first part))``, unpadded, where the
JSON is ``{"v": 1, "e": <sha256 hex of the normalised address>, "c": <customer account>,
"x": <expiry, unix seconds>}``. The address itself is never in the link, only the hash the
suppression list is keyed by (:func:`shared.privacy.suppression.email_hash`). The secret is read by
name (``UNSUBSCRIBE_SIGNING_SECRET_NAME``) from Key Vault or the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.privacy.suppression import email_hash

TOKEN_VERSION = 1
# A token is about 200 characters; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HASH = re.compile(r"[0-9a-f]{64}")


class InvalidTokenError(ValueError):
    """The token is malformed, forged or expired. The message never quotes the token."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class UnsubscribeClaims:
    email_hash: str
    customer_account: str
    expires_at: int


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise InvalidTokenError("the token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTokenError("the token is not base64url") from None


def _signature(secret: str, body: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest()


def sign(claims: UnsubscribeClaims, secret: str) -> str:
    """The token for ``claims``, signed with ``secret``."""
    if not _HASH.fullmatch(claims.email_hash):
        raise ValueError("email_hash must be a lower-case SHA-256 hex digest")
    payload = {
        "v": TOKEN_VERSION,
        "e": claims.email_hash,
        "c": claims.customer_account,
        "x": claims.expires_at,
    }
    body = _encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_encode(_signature(secret, body))}"


def token_for(email: str, customer_account: str, *, secret: str, now: datetime, days: int) -> str:
    """The unsubscribe token of an address, valid for ``days`` from ``now``."""
    expires = int((now + timedelta(days=days)).timestamp())
    return sign(UnsubscribeClaims(email_hash(email), customer_account, expires), secret)


def verify(token: str, secret: str, *, now: datetime) -> UnsubscribeClaims:
    """The claims of a genuine, unexpired token; :class:`InvalidTokenError` otherwise.

    The signature is checked (in constant time) before the body is even parsed.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidTokenError("the token is not of the form <body>.<signature>")
    body, signature = token.split(".")
    given = _decode(signature)
    _decode(body)
    if not hmac.compare_digest(given, _signature(secret, body)):
        raise InvalidTokenError("the token's signature does not match")
    try:
        payload = json.loads(_decode(body))
    except ValueError:
        raise InvalidTokenError("the token's body is not JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
        raise InvalidTokenError("the token's version is not supported")
    hashed, account, expires = payload.get("e"), payload.get("c"), payload.get("x")
    if not isinstance(hashed, str) or not _HASH.fullmatch(hashed):
        raise InvalidTokenError("the token names no address hash")
    if not isinstance(account, str):
        raise InvalidTokenError("the token names no customer account")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise InvalidTokenError("the token has no expiry")
    if expires <= int(now.timestamp()):
        raise InvalidTokenError("the token has expired", expired=True)
    return UnsubscribeClaims(hashed, account, expires)

"""Unsubscribe tokens: the link in the email proves, by itself, which address to suppress, and
tells nobody else anything about the person.

Version 2 (every token made now) is ``"v2." base64url(nonce || AES-256-GCM(key, payload))``,
unpadded, where ``payload`` is the 32 bytes of the SHA-256 of the normalised address (the key of
the suppression list, :func:`shared.privacy.suppression.email_hash`) followed by the expiry as an
8-byte big-endian unix time, and ``nonce`` is 12 random bytes. The key is derived (HKDF-SHA256)
from the secret that ``UNSUBSCRIBE_SIGNING_SECRET_NAME`` names. GCM's tag authenticates the
token, so a changed or forged one fails as a whole; the encryption keeps the link free of any
readable identifier: no account number, and not even the address's hash, which anyone holding a
list of addresses could match. The customer account is not carried at all: unsubscribing needs
only the suppression key.

Version 1 (``base64url(JSON) "." base64url(HMAC-SHA256)``, JSON ``{"v": 1, "e": <hash>, "c":
<account>, "x": <expiry>}``) is what emails sent before version 2 carry. Those links keep working
until they expire (``UNSUBSCRIBE_LINK_DAYS`` after they were made, 365 days by default): an
unsubscribe link must work for as long as the email promised. They are only ever verified, never
made, and their account is ignored. Support for them can go once the longest link lifetime has
passed since the upgrade.

The secret must be at least 32 bytes (:data:`MIN_SECRET_BYTES`); a shorter one is refused with
:class:`WeakSecretError` whenever a token is made or checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.privacy.suppression import email_hash

TOKEN_VERSION = 2
MIN_SECRET_BYTES = 32
# A version-2 token is 94 characters, a version-1 token about 200; anything far longer is not ours.
MAX_TOKEN_LENGTH = 1024
_V2_PREFIX = "v2."
_NONCE_BYTES = 12
_HASH_BYTES = 32
_EXPIRY_BYTES = 8
_TAG_BYTES = 16
_V2_BYTES = _NONCE_BYTES + _HASH_BYTES + _EXPIRY_BYTES + _TAG_BYTES
# Binds the ciphertext to its purpose and version: a key derived for something else cannot open it.
_V2_CONTEXT = b"d365-commerce-connector unsubscribe token v2"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HASH = re.compile(r"[0-9a-f]{64}")


class InvalidTokenError(ValueError):
    """The token is malformed, forged or expired. The message never quotes the token."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class WeakSecretError(ValueError):
    """The signing secret is shorter than :data:`MIN_SECRET_BYTES`: a configuration fault.

    The message names no value; callers add the secret's name and setting."""


@dataclass(frozen=True)
class UnsubscribeClaims:
    email_hash: str
    expires_at: int


def check_secret(secret: str) -> None:
    """Raise :class:`WeakSecretError` for a secret under 32 bytes (UTF-8)."""
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise WeakSecretError(
            f"the unsubscribe signing secret is shorter than {MIN_SECRET_BYTES} bytes; "
            "set a long random one (e.g. openssl rand -base64 32)"
        )


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise InvalidTokenError("the token is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTokenError("the token is not base64url") from None
    # Base64 leaves the last character's low bits unused; only our own spelling is one token.
    if _encode(data) != text:
        raise InvalidTokenError("the token is not base64url")
    return data


def _key(secret: str) -> bytes:
    # cryptography (about 25 ms to import) loads with the first token, not when the app starts.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_V2_CONTEXT).derive(
        secret.encode("utf-8")
    )


def sign(claims: UnsubscribeClaims, secret: str) -> str:
    """The version-2 token for ``claims``, sealed with ``secret``."""
    check_secret(secret)
    if not _HASH.fullmatch(claims.email_hash):
        raise ValueError("email_hash must be a lower-case SHA-256 hex digest")
    if not 0 <= claims.expires_at < 2**63:
        raise ValueError("expires_at must be a unix time")
    payload = bytes.fromhex(claims.email_hash) + claims.expires_at.to_bytes(_EXPIRY_BYTES, "big")
    nonce = os.urandom(_NONCE_BYTES)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealed = AESGCM(_key(secret)).encrypt(nonce, payload, _V2_CONTEXT)
    return _V2_PREFIX + _encode(nonce + sealed)


def token_for(email: str, *, secret: str, now: datetime, days: int) -> str:
    """The unsubscribe token of an address, valid for ``days`` from ``now``."""
    expires = int((now + timedelta(days=days)).timestamp())
    return sign(UnsubscribeClaims(email_hash(email), expires), secret)


def verify(token: str, secret: str, *, now: datetime) -> UnsubscribeClaims:
    """The claims of a genuine, unexpired token (either version); :class:`InvalidTokenError`
    otherwise. The token is authenticated before any of its content is read."""
    check_secret(secret)
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("the token is empty or too long")
    if token.startswith(_V2_PREFIX):
        claims = _verify_v2(token.removeprefix(_V2_PREFIX), secret)
    else:
        claims = _verify_v1(token, secret)
    if claims.expires_at <= int(now.timestamp()):
        raise InvalidTokenError("the token has expired", expired=True)
    return claims


def _verify_v2(text: str, secret: str) -> UnsubscribeClaims:
    raw = _decode(text)
    if len(raw) != _V2_BYTES:
        raise InvalidTokenError("the token has the wrong length")
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        payload = AESGCM(_key(secret)).decrypt(nonce, sealed, _V2_CONTEXT)
    except InvalidTag:
        raise InvalidTokenError("the token's signature does not match") from None
    hashed = payload[:_HASH_BYTES].hex()
    return UnsubscribeClaims(hashed, int.from_bytes(payload[_HASH_BYTES:], "big"))


def _verify_v1(token: str, secret: str) -> UnsubscribeClaims:
    if token.count(".") != 1:
        raise InvalidTokenError("the token is not of the form <body>.<signature>")
    body, signature = token.split(".")
    given = _decode(signature)
    _decode(body)
    expected = hmac.new(secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise InvalidTokenError("the token's signature does not match")
    try:
        payload = json.loads(_decode(body))
    except ValueError:
        raise InvalidTokenError("the token's body is not JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise InvalidTokenError("the token's version is not supported")
    hashed, expires = payload.get("e"), payload.get("x")
    if not isinstance(hashed, str) or not _HASH.fullmatch(hashed):
        raise InvalidTokenError("the token names no address hash")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise InvalidTokenError("the token has no expiry")
    return UnsubscribeClaims(hashed, expires)

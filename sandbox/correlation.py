"""The per-request id every stand-in answer carries (``request-id`` header, error bodies)."""

from __future__ import annotations

import uuid

from aiohttp import web

REQUEST_ID_KEY = "sandbox.request_id"


def request_id(request: web.Request) -> str:
    """The id the sandbox gave this request; a fresh one outside the sandbox's middleware."""
    value = request.get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else str(uuid.uuid4())

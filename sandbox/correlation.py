"""The per-request id every stand-in answer carries (``request-id`` header, error bodies)."""

from __future__ import annotations

import uuid

from aiohttp import web

REQUEST_ID_KEY = web.RequestKey("sandbox_request_id", str)


def request_id(request: web.Request) -> str:
    """The id the sandbox gave this request; a fresh one outside the sandbox's middleware."""
    return request.get(REQUEST_ID_KEY) or str(uuid.uuid4())

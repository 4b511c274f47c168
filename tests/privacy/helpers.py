"""Calling the privacy endpoints as the Functions host does."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from sandbox.server import Sandbox

SECRET = "sandbox-unsubscribe-signing-secret-0123456789"
# The app registration that stands for the connector's API (API_CLIENT_ID) and its token audience.
API_CLIENT_ID = "5e7c0a11-0c0e-4c0e-9c0e-c0ec7000a9a1"
API_AUDIENCE = f"api://{API_CLIENT_ID}"
ERASE_ROLE = "Privacy.Erase"


def bearer(sandbox: Sandbox, *roles: str, **options: Any) -> dict[str, str]:
    """The Authorization header of an admin tool holding ``roles`` (by default the erasure role)."""
    token = sandbox.caller_token(audience=API_AUDIENCE, roles=list(roles or (ERASE_ROLE,)), **options)
    return {"Authorization": f"Bearer {token}"}


def unsubscribe_request(method: str, token: str | None, *, one_click: bool = True) -> func.HttpRequest:
    params = {} if token is None else {"t": token}
    body = b"List-Unsubscribe=One-Click" if method == "POST" and one_click else b""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    return func.HttpRequest(
        method, "http://localhost/api/unsubscribe", headers=headers, params=params, body=body
    )


def erasure_request(body: Any = None, *, raw: bytes | None = None, **headers: str) -> func.HttpRequest:
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    return func.HttpRequest(
        "POST",
        "http://localhost/api/privacy/erasure",
        headers={"Content-Type": "application/json", **headers},
        body=data,
    )


async def call(functions: dict[str, Any], name: str, request: func.HttpRequest) -> func.HttpResponse:
    response: func.HttpResponse = await functions[name].get_user_function()(request)
    return response

"""Calling the registered HTTP functions the way the Functions host does."""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func


def http_request(
    route: str, body: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> func.HttpRequest:
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return func.HttpRequest("POST", f"http://localhost/api/{route}", headers=all_headers, body=data)


async def call(functions: dict[str, Any], name: str, request: func.HttpRequest) -> func.HttpResponse:
    response: func.HttpResponse = await functions[name].get_user_function()(request)
    return response


def body_of(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def principal(*roles: str, role_typ: str = "roles") -> str:
    claims = [{"typ": role_typ, "val": role} for role in roles] + [{"typ": "name", "val": "till-7"}]
    data = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_typ}
    return base64.b64encode(json.dumps(data).encode()).decode()


async def with_fno_token(runtime: Any) -> Any:
    """``runtime`` with its F&O token fetched already. A test that shrinks FNO_TIMEOUT_SECONDS to
    time out an F&O call must not have the token step, which shares that deadline, time out first
    on a busy machine."""
    settings = runtime.settings
    await runtime.tokens.get_token(settings.fno_url.strip().rstrip("/").lower() + "/.default")
    return runtime

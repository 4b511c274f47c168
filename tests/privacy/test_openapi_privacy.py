"""openapi.yaml against the privacy endpoints' real behaviour: every documented status is produced
by a real call, nothing undocumented is produced, and every JSON body validates against its schema."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from sandbox.server import Sandbox
from shared.email.base import ProviderTransientError
from shared.privacy import blueprint
from shared.privacy.tokens import token_for
from shared.runtime import Runtime
from shared.timeutil import utcnow
from tests.customers.helpers import principal
from tests.customers.test_openapi import load_spec, violations
from tests.privacy.helpers import ERASE_ROLE, SECRET, bearer, call, erasure_request, unsubscribe_request


@pytest.fixture
def spec() -> dict[str, Any]:
    return load_spec()


def check(spec: dict[str, Any], operation: dict[str, Any], response: func.HttpResponse) -> None:
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"undocumented status {response.status_code}"
    for header in documented.get("headers", {}):
        assert header in response.headers, f"{response.status_code}: missing header {header}"
    if "content" not in documented:
        assert response.get_body() == b""
        return
    media = response.mimetype
    assert media in documented["content"], f"{response.status_code}: undocumented media type {media}"
    if media.endswith("json"):
        schema = documented["content"][media]["schema"]
        body = json.loads(response.get_body())
        assert violations(spec, schema, body) == [], (response.status_code, body)


def test_the_paths_are_the_registered_functions(
    spec: dict[str, Any], registered_functions: dict[str, Any]
) -> None:
    routes = {}
    for name in ("unsubscribe", "privacy_erasure"):
        trigger = json.loads(registered_functions[name].get_function_json())["bindings"][0]
        routes["/" + trigger["route"]] = sorted(m.lower() for m in trigger["methods"])
    assert {path: sorted(spec["paths"][path]) for path in routes} == routes
    # The link is clicked from an email: no function key.
    assert spec["paths"]["/unsubscribe"]["get"]["security"] == []
    assert spec["paths"]["/unsubscribe"]["post"]["security"] == []
    # Erasure: a function key and, always, an Entra token carrying PRIVACY_APP_ROLE.
    assert spec["paths"]["/privacy/erasure"]["post"]["security"] == [{"functionKey": [], "entraBearer": []}]


async def test_unsubscribe_matches_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = next(c for c in sandbox.data.customers.values() if c.email)
    good = token_for(customer.email, secret=SECRET, now=utcnow(), days=1)
    expired = token_for(customer.email, secret=SECRET, now=utcnow() - timedelta(days=3), days=1)
    for method in ("get", "post"):
        operation = spec["paths"]["/unsubscribe"][method]
        seen: set[int] = set()

        async def run(
            token: str | None,
            method: str = method,
            operation: Any = operation,
            seen: set[int] = seen,
            one_click: bool = True,
        ) -> None:
            response = await call(
                registered_functions,
                "unsubscribe",
                unsubscribe_request(method.upper(), token, one_click=one_click),
            )
            check(spec, operation, response)
            seen.add(response.status_code)

        await run(good)
        if method == "post":
            await run(good, one_click=False)  # the confirmation page's button: 200
        await run(expired)
        monkeypatch.delenv("UNSUBSCRIBE_SIGNING_SECRET")
        runtime.secrets.invalidate(runtime.settings.unsubscribe_signing_secret_name)
        await run(good)  # 503
        monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
        with monkeypatch.context() as patched:
            patched.setattr(blueprint, "verify", _explode)
            await run(good)  # 500
        assert sorted(seen) == sorted(int(status) for status in operation["responses"])


async def test_erasure_matches_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operation = spec["paths"]["/privacy/erasure"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert violations(spec, schema, {"email": "a@b.example", "customerAccount": "C1"}) == []
    assert violations(spec, schema, {"name": "x"}) == ["$.name: undocumented"]
    seen: set[int] = set()
    admin = bearer(sandbox)

    async def run(request: func.HttpRequest) -> None:
        response = await call(registered_functions, "privacy_erasure", request)
        check(spec, operation, response)
        seen.add(response.status_code)

    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    sandbox.faults.add(f"/entra/{sandbox.tenant_id}/discovery", status=500, times=None)
    await run(erasure_request({"customerAccount": "C1"}, **admin))  # 503: Entra's keys unreadable
    sandbox.faults.clear()
    await run(erasure_request({"email": "a@b.example", "customerAccount": "C1"}, **admin))
    await run(erasure_request({"customerAccount": "C1", "extra": 1}, **admin))
    await run(erasure_request({"email": "x" * 5000}, **admin))
    await run(erasure_request(raw=b"<x/>", **{**admin, "Content-Type": "application/xml"}))
    await run(erasure_request({"customerAccount": "C1"}, **{"X-MS-CLIENT-PRINCIPAL": principal(ERASE_ROLE)}))
    await run(erasure_request({"customerAccount": "C1"}, **bearer(sandbox, "Other")))
    monkeypatch.setattr(blueprint, "erase", _provider_fails)
    await run(erasure_request({"customerAccount": "C1"}, **admin))
    monkeypatch.setattr(blueprint, "erase", _explode)
    await run(erasure_request({"customerAccount": "C1"}, **admin))

    assert sorted(seen) == sorted(int(status) for status in operation["responses"])


async def _provider_fails(*args: Any, **kwargs: Any) -> Any:
    raise ProviderTransientError("email webhook (HTTP 503): simulated [correlation id x]")


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated failure")
